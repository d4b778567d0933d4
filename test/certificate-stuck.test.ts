import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { parsePromText } from './support/prom-text.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

/**
 * A refresh whose file write hangs (an fsync on a frozen volume, driven by the failpoint
 * `certificate.before-write`, which no abort signal reaches): said, waited for rather than
 * written beside, and no obstacle to the shutdown.
 */
const START_TIMEOUT_MS = 3_000

/** A data directory with an identity the next start finds due (REFRESH_INTERVAL 30 s, local authority). */
async function seeded(): Promise<string> {
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-stuck-'))
  const sc = await startReady({ dataDir, env: { DELAY_JITTER_SECONDS: '0', GATEWAY_ADDR: '' } })
  assert.equal(await stop(sc), 0)
  return dataDir
}

function boot(dataDir: string, failpoint: string): Promise<Sidecar> {
  const config = join(dataDir, 'sia.json')
  writeFileSync(
    config,
    JSON.stringify({ services: { certificate: { startTimeout: `${START_TIMEOUT_MS}ms` } } }),
  )
  return startReady({
    dataDir,
    args: ['--config', config],
    env: {
      DELAY_JITTER_SECONDS: '0',
      GATEWAY_ADDR: '',
      REFRESH_INTERVAL: '30s',
      SIA_FAILPOINTS: `certificate.before-write=${failpoint}`,
    },
  })
}

async function stuckSeconds(sc: Sidecar): Promise<number> {
  const res = await fetch(`${await sc.url('metrics')}/metrics`)
  assert.equal(res.status, 200)
  const sample = parsePromText(await res.text()).find((s) => s.name === 'certificate_refresh_stuck_seconds')
  assert.ok(sample, 'certificate_refresh_stuck_seconds is exposed')
  return sample.value
}

describe('a refresh that hangs', { concurrency: 2 }, () => {
  test('the start keeps the identity on disk, the refresh is said to be stuck (a log record and a gauge), and SIGTERM still exits 0 with every service stopped', async () => {
    const dataDir = await seeded()
    const files = ['key.pem', 'cert.pem'].map((f) => join(dataDir, f))
    const before = files.map((f) => readFileSync(f, 'utf8'))
    const sc = await boot(dataDir, 'hang')
    // The boot fetch's deadline passes with the write still hanging: the start answers with the
    // identity on disk (it used to wait past the start deadline and fail the sidecar).
    const failed = await sc.waitForEvent('certificate.refresh.failed')
    assert.equal((failed.err as { code?: string }).code, 'ERR_PROVIDER_TIMEOUT')
    const stuck = await sc.waitForEvent('certificate.refresh.stuck')
    assert.equal(stuck.afterMs, START_TIMEOUT_MS)
    assert.ok((await stuckSeconds(sc)) >= START_TIMEOUT_MS / 1000)
    assert.equal(sc.events('certificate.issued').length, 0)
    assert.deepEqual(
      files.map((f) => readFileSync(f, 'utf8')),
      before,
    )
    assert.equal(await stop(sc), 0)
    assert.equal(sc.events('service.shutdown.timeout').length, 0, 'the hung write does not hold the shutdown')
    assert.equal(sc.events('service.shutdown.done').length, sc.events('service.shutdown.begin').length)
    assert.equal(sc.events('certificate.refresh.failed').length, 1, 'the abandoned retry is not a failure')
  })

  test('a write that ends late is said to have ended, and the refresh waiting for it runs after it, not beside it', async () => {
    const dataDir = await seeded()
    // The boot fetch gives up at its deadline (~2.25 s), the refresh is stuck at 3 s, the timer's
    // retry (~4-5 s after the start) waits for it; the write lands at 8 s; then the retry writes.
    const sc = await boot(dataDir, '1*delay(8000)')
    const second = await sc.waitForCount('certificate.issued', 2, {}, 20_000)
    const at = (r: unknown) => sc.records.indexOf(r as (typeof sc.records)[number])
    const [stuck, unstuck] = [
      sc.events('certificate.refresh.stuck'),
      sc.events('certificate.refresh.unstuck'),
    ]
    assert.equal(stuck.length, 1)
    assert.equal(unstuck.length, 1)
    assert.ok((unstuck[0]!.tookMs as number) >= 8_000)
    const first = sc.events('certificate.issued')[0]
    assert.ok(at(stuck[0]) < at(first) && at(first) < at(unstuck[0]) && at(unstuck[0]) < at(second))
    // The files hold the newer identity: the late write did not land over it.
    const onDisk = new X509Certificate(readFileSync(join(dataDir, 'cert.pem'), 'utf8'))
    assert.equal(onDisk.serialNumber, second.serial)
    assert.equal(await stuckSeconds(sc), 0)
    assert.equal(sc.events('certificate.refresh.recovered').length, 1)
    assert.equal(await stop(sc), 0)
  })
})
