import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { parsePromText } from './support/prom-text.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

/**
 * The token files under faults: a write that hangs (a frozen volume: the failpoint
 * `token.before-write`, which no abort signal reaches) and a write that fails.
 */
const START_TIMEOUT_MS = 3_000
const TARGETS = 'demo:role.reader,other:role.writer'

/** The token service with TARGETS, its files as `files` has them (given the data directory). */
function boot(files: (dataDir: string) => Record<string, string>): Promise<Sidecar> {
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-token-files-'))
  const config = join(dataDir, 'sia.json')
  writeFileSync(config, JSON.stringify({ services: { token: { startTimeout: `${START_TIMEOUT_MS}ms` } } }))
  return startReady({
    dataDir,
    args: ['--config', config],
    env: { GATEWAY_ADDR: '', TARGET_DOMAIN_ROLES: TARGETS, ...files(dataDir) },
  })
}

/** The files in TOKEN_DIR, each write meeting `failpoint` first. */
const withFailpoint = (failpoint: string) => (dataDir: string) => ({
  TOKEN_DIR: join(dataDir, 'tokens'),
  SIA_FAILPOINTS: `token.before-write=${failpoint}`,
})

const tokenFiles = (sc: Sidecar) => {
  try {
    return readdirSync(join(sc.dataDir, 'tokens')).sort()
  } catch {
    return []
  }
}

describe('token files under faults', { concurrency: 2 }, () => {
  test('a write that hangs: the start goes on at its deadline, the write is said to be stuck (a log record and a gauge), tokens are served, and SIGTERM exits 0 with every service stopped', async () => {
    const sc = await boot(withFailpoint('hang'))
    const failed = await sc.waitForEvent('token.files.failed')
    assert.equal((failed.err as { name?: string }).name, 'TimeoutError', 'abandoned at the boot deadline')
    const stuck = await sc.waitForEvent('token.files.stuck')
    assert.equal(stuck.afterMs, START_TIMEOUT_MS)
    const scrape = parsePromText(await (await fetch(`${await sc.url('metrics')}/metrics`)).text())
    const gauge = scrape.find((s) => s.name === 'token_files_stuck_seconds')
    assert.ok(gauge && gauge.value >= START_TIMEOUT_MS / 1000, `token_files_stuck_seconds ${gauge?.value}`)
    const res = await fetch(`${await sc.url('token')}/roletoken`, {
      method: 'POST',
      body: JSON.stringify({ domain: 'demo', role: 'reader' }),
    })
    assert.equal(res.status, 200, 'the cache serves whatever the files do')
    assert.deepEqual(tokenFiles(sc), [])
    // The retry finds the write still under way: said, and owed, not written beside it.
    const busy = await sc.waitFor(
      (r) => r.event === 'token.files.failed' && (r.err as { code?: string }).code === 'ERR_TOKEN_FILES_BUSY',
    )
    assert.equal(busy.level, 'error')
    assert.equal(await stop(sc), 0)
    assert.equal(sc.events('service.shutdown.timeout').length, 0, 'the hung write does not hold the shutdown')
    assert.equal(sc.events('service.shutdown.done').length, sc.events('service.shutdown.begin').length)
  })

  test('a write that fails is retried on the back-off schedule by writing the files again, not by fetching every target again', async () => {
    const sc = await boot(withFailpoint('1*error'))
    await sc.waitForEvent('token.files.failed')
    assert.equal(sc.events('token.cache.updated').length, 1, 'the boot fetch')
    // The retry (5 s, less up to a quarter) writes the files from the cache.
    const recovered = await sc.waitForEvent('token.files.recovered')
    assert.equal(recovered.failures, 1)
    assert.deepEqual(tokenFiles(sc), [
      'demo:role.reader.accesstoken',
      'demo:role.reader.roletoken',
      'other:role.writer.accesstoken',
      'other:role.writer.roletoken',
    ])
    for (const f of tokenFiles(sc)) assert.equal(statSync(join(sc.dataDir, 'tokens', f)).mode & 0o777, 0o600)
    assert.equal(sc.events('token.cache.updated').length, 1, 'no second fetch of the targets')
    assert.equal(sc.events('token.files.failed').length, 1)
    assert.equal(await stop(sc), 0)
  })

  test('a write that fails after the local authority is made anew is retried on the back-off schedule, not left to the next interval', async () => {
    const sc = await boot((dataDir) => ({
      TOKEN_TYPE: 'accesstoken',
      TOKEN_DIR: join(dataDir, 'tokens'),
      TOKEN_REFRESH_INTERVAL: '1h',
    }))
    try {
      const dir = join(sc.dataDir, 'tokens')
      const kidsOfFiles = () =>
        tokenFiles(sc).map(
          (f) =>
            (
              JSON.parse(
                Buffer.from(readFileSync(join(dir, f), 'utf8').split('.')[0]!, 'base64url').toString(),
              ) as { kid: string }
            ).kid,
        )
      const before = kidsOfFiles()
      assert.equal(before.length, 2)
      // The directory cannot be written (a file in its place) when the authority is made anew; the
      // token service loads the new one at its next use, the JWKS asked for.
      renameSync(dir, `${dir}.aside`)
      writeFileSync(dir, '')
      rmSync(join(sc.dataDir, 'authority'), { recursive: true })
      const jwks = (await (await fetch(`${await sc.url('token')}/oauth2/keys`)).json()) as {
        keys: { kid: string }[]
      }
      const kids = jwks.keys.map((k) => k.kid)
      assert.ok(!kids.includes(before[0]!), 'a new authority signs')
      await sc.waitForEvent('token.cache.cleared')
      await sc.waitForEvent('token.files.failed')
      rmSync(dir)
      renameSync(`${dir}.aside`, dir)
      const recovered = await sc.waitForEvent('token.files.recovered')
      assert.equal(recovered.failures, 1)
      for (const kid of kidsOfFiles()) assert.ok(kids.includes(kid), `${kid} is the new authority's`)
      assert.equal(sc.events('token.files.failed').length, 1)
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test("a file that cannot be written keeps no other target's file from being refreshed, and the failure names that file alone", async () => {
    const sc = await boot((dataDir) => ({
      TOKEN_TYPE: 'accesstoken',
      TOKEN_REFRESH_INTERVAL: '2s',
      ACCESS_TOKEN_NAMING_FORMAT: join(dataDir, 'out', '{{domain}}', '{{role}}.at'),
    }))
    try {
      const out = join(sc.dataDir, 'out')
      const other = join(out, 'other', 'writer.at')
      const before = readFileSync(other, 'utf8')
      // The first target's directory (the first file in the cache's order) becomes a file.
      rmSync(join(out, 'demo'), { recursive: true })
      writeFileSync(join(out, 'demo'), 'not a directory')
      const failed = await sc.waitForEvent('token.files.failed')
      const { message } = failed.err as { message: string }
      assert.ok(
        message.startsWith(`1 of 2 token file(s) not written: ${join(out, 'demo', 'reader.at')}`),
        message,
      )
      assert.ok(!message.includes('writer'), message)
      assert.notEqual(readFileSync(other, 'utf8'), before, "the other target's file is written anew")
      assert.equal(statSync(other).mode & 0o777, 0o600)
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })
})
