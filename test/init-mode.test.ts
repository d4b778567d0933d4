import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { test } from 'node:test'
import { providerEnv, startZtsDouble } from './doubles/zts.js'
import { eventually } from './support/eventually.js'
import { startSidecar } from './support/sidecar.js'

test('MODE=init writes key and certificate once and exits 0 without starting any service', async () => {
  const sc = startSidecar({ env: { MODE: 'init' } })
  const { code } = await sc.exited
  assert.equal(code, 0, sc.stderr())
  assert.equal(statSync(join(sc.dataDir, 'key.pem')).mode & 0o777, 0o600)
  assert.equal(statSync(join(sc.dataDir, 'cert.pem')).mode & 0o777, 0o644)
  assert.deepEqual(sc.events('service.start.begin'), [], 'no worker was started')
  assert.deepEqual(
    sc.events('supervisor.exit').map((r) => [r.code, r.cause]),
    [[0, 'init']],
  )
})

test('MODE=init exits 1 when the identity cannot be obtained', async () => {
  // files provider (ENDPOINT set, no PROVIDER_SERVICE) with no key or cert on disk.
  const sc = startSidecar({ env: { MODE: 'init', ENDPOINT: 'https://127.0.0.1:1/zts/v1' } })
  const { code } = await sc.exited
  assert.equal(code, 1)
  assert.deepEqual(
    sc.events('supervisor.exit').map((r) => [r.code, r.cause]),
    [[1, 'init']],
  )
})

test('MODE=init never waits on a file read that never ends: it leaves with its code, at its deadline at the latest', async (t) => {
  // A FIFO nobody writes, as a read of a hung NFS mount: the read stays in libuv's thread pool.
  const dir = mkdtempSync(join(tmpdir(), 'sia-init-'))
  const fifo = join(dir, 'cert.pem')
  execFileSync('mkfifo', [fifo])
  // The key is missing, so the identity on disk fails fast and one is issued over the FIFO: exit
  // 0. The read of the FIFO was left pending, and process.exit() joined it for ever.
  const issued = startSidecar({ env: { MODE: 'init', CERT_FILE: fifo } })
  t.after(() => issued.kill('SIGKILL'))
  assert.equal((await issued.exited).code, 0, issued.stderr())
  assert.ok(statSync(fifo).isFile(), 'the certificate replaced the FIFO')

  // A key that is a FIFO beside that certificate: the read never ends, so the identity on disk is
  // never read; the deadline (the start timeouts of the certificate and token services) ends the
  // init with 1.
  const key = join(dir, 'key.pem')
  execFileSync('mkfifo', [key])
  const paths = { KEY_FILE: key, CERT_FILE: fifo }
  const stuck = startSidecar({ env: { MODE: 'init', ...paths, START_TIMEOUT: '1s' } })
  t.after(() => stuck.kill('SIGKILL'))
  const failed = await stuck.waitForEvent('init.failed')
  assert.equal(failed.budgetMs, 2000)
  assert.equal((await stuck.exited).code, 1, stuck.stderr())
  assert.deepEqual(
    stuck.events('supervisor.exit').map((r) => [r.code, r.cause]),
    [[1, 'init']],
  )

  // Told to stop meanwhile: exit 1 within the init's grace (a second), not held by the read.
  const stopped = startSidecar({ env: { MODE: 'init', ...paths, START_TIMEOUT: '60s' } })
  t.after(() => stopped.kill('SIGKILL'))
  await stopped.waitForEvent('supervisor.boot')
  stopped.kill('SIGTERM')
  assert.equal((await stopped.exited).code, 1, stopped.stderr())
  assert.deepEqual(
    stopped.events('supervisor.exit').map((r) => [r.code, r.cause]),
    [[1, 'signal']],
  )
})

test('MODE=init makes no DELAY_JITTER_SECONDS pause, and its deadline holds none: the start timeouts alone', async (t) => {
  // Key and certificate FIFOs nobody writes: the identity on disk is never read, so the init ends
  // at its deadline. The jitter (an hour) was in it, and the init waited for an hour.
  const dir = mkdtempSync(join(tmpdir(), 'sia-init-'))
  const paths = { KEY_FILE: join(dir, 'key.pem'), CERT_FILE: join(dir, 'cert.pem') }
  for (const fifo of Object.values(paths)) execFileSync('mkfifo', [fifo])
  const sc = startSidecar({
    env: { MODE: 'init', ...paths, START_TIMEOUT: '1s', DELAY_JITTER_SECONDS: '3600' },
  })
  t.after(() => sc.kill('SIGKILL'))
  const failed = await sc.waitForEvent('init.failed')
  assert.equal(failed.budgetMs, 2000)
  assert.equal((await sc.exited).code, 1, sc.stderr())
  assert.deepEqual(sc.events('certificate.boot.delayed'), [])
})

test('MODE=init writes a key file whose name is 250 bytes long (its staged file, 17 bytes longer, failed ENAMETOOLONG)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-init-'))
  const key = join(dir, `${'k'.repeat(246)}.pem`)
  const sc = startSidecar({ env: { MODE: 'init', KEY_FILE: key } })
  assert.equal((await sc.exited).code, 0, sc.stderr())
  assert.equal(statSync(key).mode & 0o777, 0o600)
  assert.match(readFileSync(key, 'utf8'), /PRIVATE KEY/)
  assert.deepEqual(readdirSync(dir), [basename(key)], 'nothing left beside it')
})

test('MODE=init with an unreadable SERVER_CA_CERT fails as an init (init.failed), not as an internal error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-init-'))
  const env = { ENDPOINT: 'https://127.0.0.1:1/zts/v1', PROVIDER_SERVICE: 'athenz.k8s' }
  for (const ca of [join(dir, 'missing.pem'), dir]) {
    const sc = startSidecar({
      dataDir: dir,
      env: { MODE: 'init', DATA_DIR: dir, ...env, SERVER_CA_CERT: ca },
    })
    t.after(() => sc.kill('SIGKILL'))
    assert.equal((await sc.exited).code, 1, sc.stderr())
    assert.match(JSON.stringify(sc.events('init.failed')[0]?.err), /ENOENT|EISDIR/)
    assert.deepEqual(
      sc.events('supervisor.exit').map((r) => [r.code, r.cause]),
      [[1, 'init']],
    )
  }
})

test('MODE=init retries what ZTS fails to answer on SIA boot schedule (instance, role certificate, token) and exits 0', async (t) => {
  const zts = await startZtsDouble()
  t.after(() => zts.close())
  // Each step's first try fails (the ZTS client's three attempts, 503 each): a ZTS rollout.
  zts.failNext('register', 503, 3)
  zts.failNext('rolecert', 503, 3)
  zts.failNext('oauth2', 503, 3)
  const dir = mkdtempSync(join(tmpdir(), 'sia-init-'))
  const env = { ...providerEnv(zts), TARGET_DOMAIN_ROLES: 'demo:role.reader', TOKEN_TYPE: 'accesstoken' }
  const sc = startSidecar({
    dataDir: dir,
    env: { MODE: 'init', DATA_DIR: dir, TOKEN_DIR: join(dir, 'tok'), ...env },
  })
  t.after(() => sc.kill('SIGKILL'))
  assert.equal((await sc.exited).code, 0, sc.stderr())
  assert.deepEqual(
    sc
      .events('init.retry')
      .map((r) => [r.step, r.attempt, (r.err as { message: string }).message.match(/\d{3}/)?.[0]]),
    [
      ['instance', 1, '503'],
      ['roles', 1, undefined], // ERR_ROLE_CERTS: "1 of 1 role certificates failed"
      ['accesstoken', 1, '503'],
    ],
  )
  assert.deepEqual([zts.counts.register, zts.counts.rolecert, zts.counts.oauth2], [4, 4, 4])
  assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600)
  assert.ok(statSync(join(dir, 'demo:role.reader.cert.pem')).isFile())
  assert.match(
    readFileSync(join(dir, 'tok', 'demo:role.reader.accesstoken'), 'utf8'),
    /^[\w-]+\.[\w-]+\.[\w-]+$/,
  )
})

test('MODE=init does not retry a refusal: a ZTS 403 exits 1 at its first answer', async (t) => {
  const zts = await startZtsDouble()
  t.after(() => zts.close())
  zts.failNext('register', 403, 5)
  const sc = startSidecar({ env: { MODE: 'init', ...providerEnv(zts) } })
  t.after(() => sc.kill('SIGKILL'))
  assert.equal((await sc.exited).code, 1, sc.stderr())
  assert.equal(zts.counts.register, 1, 'asked once')
  assert.deepEqual(sc.events('init.retry'), [])
  assert.match(JSON.stringify(sc.events('init.failed')[0]?.err), /answered 403/)
})

/** NODE_OPTIONS and settings that hold the renames of staged files matching `pattern` for `ms`. */
function slowRename(dir: string, pattern: string, ms: number): { env: Record<string, string>; mark: string } {
  const mark = join(dir, 'held.mark')
  const preload = new URL('./support/slow-rename.js', import.meta.url).href
  return {
    mark,
    env: {
      NODE_OPTIONS: `--import=${preload}`,
      SLOW_RENAME: pattern,
      SLOW_RENAME_MS: String(ms),
      SLOW_RENAME_MARK: mark,
    },
  }
}

/** Every file under `dir` that a write staged or linked aside (`<file>.<hex>.tmp`, `.old`). */
function leftovers(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) =>
    /\.[0-9a-f]{12}\.(tmp|old)$/.test(f),
  )
}

test('MODE=init failing on one token lets the write of another finish: no staged token file is left', async (t) => {
  const zts = await startZtsDouble()
  t.after(() => zts.close())
  // The access token is refused once the role token is being written: its rename is held.
  zts.delay('oauth2', 200)
  zts.failNext('oauth2', 403, 1)
  const dir = mkdtempSync(join(tmpdir(), 'sia-init-'))
  const held = slowRename(dir, '\\.roletoken\\.[0-9a-f]+\\.tmp$', 1000)
  const sc = startSidecar({
    dataDir: dir,
    env: {
      MODE: 'init',
      ...providerEnv(zts),
      ...held.env,
      DATA_DIR: dir,
      TARGET_DOMAIN_ROLES: 'demo:role.reader',
      TOKEN_DIR: join(dir, 'tok'),
      TOKEN_TYPE: 'roletoken+accesstoken',
    },
  })
  t.after(() => sc.kill('SIGKILL'))
  assert.equal((await sc.exited).code, 1, sc.stderr())
  assert.ok(existsSync(held.mark), 'the role token was being written as the refusal came')
  assert.match(JSON.stringify(sc.events('init.failed')[0]?.err), /answered 403/)
  assert.deepEqual(leftovers(dir), [])
})

test('MODE=init stopped while it writes its last file: the write finishes, no staged key is left, and the init, done, exits 0', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-init-'))
  // The key, the first of the identity's files to be renamed: all three are staged by then.
  const held = slowRename(dir, '/key\\.pem\\.[0-9a-f]+\\.tmp$', 300)
  const sc = startSidecar({ dataDir: dir, env: { MODE: 'init', DATA_DIR: dir, ...held.env } })
  t.after(() => sc.kill('SIGKILL'))
  await eventually(async () => existsSync(held.mark) || undefined)
  sc.kill('SIGTERM')
  assert.equal((await sc.exited).code, 0, sc.stderr())
  assert.equal(sc.events('init.done').length, 1)
  assert.deepEqual(
    sc.events('supervisor.exit').map((r) => [r.code, r.cause]),
    [[0, 'init']],
  )
  assert.deepEqual(leftovers(dir), [])
  assert.match(readFileSync(join(dir, 'key.pem'), 'utf8'), /PRIVATE KEY/)
})

test('MODE=init removes what an init killed between staging and renaming left beside its outputs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-init-'))
  const env = {
    MODE: 'init',
    DATA_DIR: dir,
    TARGET_DOMAIN_ROLES: 'demo:role.reader',
    TOKEN_DIR: join(dir, 'tok'),
  }
  mkdirSync(join(dir, 'tok'))
  const staged = [
    join(dir, 'key.pem.0123456789ab.tmp'),
    join(dir, 'tok', 'demo:role.reader.roletoken.0123456789ab.tmp'),
  ]
  for (const f of staged) writeFileSync(f, 'staged', { mode: 0o600 })
  const sc = startSidecar({ dataDir: dir, env })
  t.after(() => sc.kill('SIGKILL'))
  assert.equal((await sc.exited).code, 0, sc.stderr())
  assert.deepEqual(
    sc.events('init.leftovers.removed').map((r) => (r.files as string[]).sort()),
    [staged.sort()],
  )
  assert.deepEqual(leftovers(dir), [])
})
