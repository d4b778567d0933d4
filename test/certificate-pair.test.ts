import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { providerEnv, startZtsDouble } from './doubles/zts.js'
import { eventually } from './support/eventually.js'
import { startSidecar } from './support/sidecar.js'

/** Whether the key file holds the private key of the certificate file. */
function pairs(dir: string): boolean {
  const cert = new X509Certificate(readFileSync(join(dir, 'cert.pem'), 'utf8'))
  return cert.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'key.pem'), 'utf8')))
}

/** Every file under `dir` that a write staged or linked aside (`<file>.<hex>.tmp`, `.old`). */
function leftovers(dir: string): string[] {
  return readdirSync(dir).filter((f) => /\.[0-9a-f]{12}\.(tmp|old)$/.test(f))
}

/**
 * A sidecar refreshing every 3 s whose certificate renames (after the key's) are held `ms`; with
 * `once`, only the first one after `held()` begins to wait (a successor's write is not held).
 */
function heldAtCertRename(ms: number, once = false) {
  const dir = mkdtempSync(join(tmpdir(), 'sia-pair-'))
  const mark = join(dir, 'held.mark')
  const sc = startSidecar({
    dataDir: dir,
    env: {
      REFRESH_INTERVAL: '3s',
      GATEWAY_ADDR: '',
      DELAY_JITTER_SECONDS: '0',
      NODE_OPTIONS: `--import=${new URL('./support/slow-rename.js', import.meta.url).href}`,
      SLOW_RENAME: '/cert\\.pem\\.[0-9a-f]+\\.tmp$',
      SLOW_RENAME_MS: String(ms),
      SLOW_RENAME_MARK: mark,
      ...(once ? { SLOW_RENAME_ONCE: '1' } : {}),
    },
  })
  /** Resolves once a periodic refresh has renamed its key and holds its certificate's rename. */
  const held = async () => {
    await sc.waitForEvent('supervisor.ready', {}, 30_000)
    rmSync(mark, { force: true }) // the boot's write was held too
    await eventually(async () => existsSync(mark) || undefined, 30_000)
  }
  return { dir, sc, held }
}

test('SIGTERM while a refresh is between its key and certificate renames: the write finishes, the pair matches, exit 0', async (t) => {
  const { dir, sc, held } = heldAtCertRename(1500)
  t.after(() => sc.kill('SIGKILL'))
  await held()
  sc.kill('SIGTERM')
  assert.equal((await sc.exited).code, 0, sc.stderr())
  assert.equal(pairs(dir), true, 'the key on disk is the certificate’s')
  assert.deepEqual(leftovers(dir), [])
  assert.deepEqual(sc.events('certificate.refresh.unfinished'), [])
})

test('SIGHUP while a refresh is between its key and certificate renames: the successor writes after it, never beside it; the pair matches', async (t) => {
  const { dir, sc, held } = heldAtCertRename(1500, true)
  t.after(() => sc.kill('SIGKILL'))
  await held()
  sc.kill('SIGHUP')
  // Logged once the predecessor's thread has ended: whatever it wrote has landed.
  await sc.waitForEvent('worker.replaced', { service: 'certificate' }, 30_000)
  assert.equal(pairs(dir), true, 'the key on disk is the certificate’s')
  assert.deepEqual(leftovers(dir), [])
  sc.kill('SIGTERM')
  assert.equal((await sc.exited).code, 0, sc.stderr())
  assert.equal(pairs(dir), true)
})

test('SIGKILL between the key and certificate renames: the restart, with ZTS down, puts the old key back and serves the pair', async (t) => {
  const zts = await startZtsDouble()
  t.after(() => zts.close())
  const dir = mkdtempSync(join(tmpdir(), 'sia-pair-'))
  const mark = join(dir, 'held.mark')
  const env = { ...providerEnv(zts), GATEWAY_ADDR: '', TOKEN_SERVER_ADDR: '', DELAY_JITTER_SECONDS: '0' }
  const first = startSidecar({
    dataDir: dir,
    env: {
      ...env,
      REFRESH_INTERVAL: '3s',
      NODE_OPTIONS: `--import=${new URL('./support/slow-rename.js', import.meta.url).href}`,
      SLOW_RENAME: '/cert\\.pem\\.[0-9a-f]+\\.tmp$',
      SLOW_RENAME_MS: '5000',
      SLOW_RENAME_MARK: mark,
      SLOW_RENAME_ONCE: '1',
    },
  })
  t.after(() => first.kill('SIGKILL'))
  await first.waitForEvent('supervisor.ready', {}, 30_000)
  rmSync(mark, { force: true }) // the boot's write was held: the next refresh's is
  await eventually(async () => existsSync(mark) || undefined, 30_000)
  first.kill('SIGKILL')
  await first.exited
  assert.equal(pairs(dir), false, 'cut between the renames: a new key beside the old certificate')
  await zts.close()
  const again = startSidecar({ dataDir: dir, env: { ...env, REFRESH_INTERVAL: '24h' } })
  t.after(() => again.kill('SIGKILL'))
  await again.waitForEvent('supervisor.ready', {}, 30_000)
  assert.equal(again.events('certificate.pair.restored').length, 1)
  assert.equal(again.events('certificate.reused').length, 1, 'served without the provider')
  assert.equal(pairs(dir), true, 'the key on disk is the certificate’s')
  assert.deepEqual(leftovers(dir), [])
  again.kill('SIGTERM')
  assert.equal((await again.exited).code, 0, again.stderr())
})
