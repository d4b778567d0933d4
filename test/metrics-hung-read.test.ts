import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { alert, metric, post, webhook } from './support/gateway.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

/**
 * A certificate file whose read never returns (a frozen volume; here a FIFO nobody writes) holds
 * one thread of libuv's pool, which every worker of the process shares. The scrapes that read it
 * must not take the rest of the pool, and the status page must answer without it.
 */
async function withHungCaFile(t: TestContext, env: Record<string, string>): Promise<Sidecar> {
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-hung-read-'))
  const sc = await startReady({
    dataDir,
    env: { METRICS_SCRAPE_TIMEOUT: '300ms', TOKEN_SERVER_ADDR: '', ...env },
  })
  const ca = join(dataDir, 'ca.pem')
  t.after(async () => {
    // Whatever read is left waiting on the FIFO gets an end, so that the sidecar can stop.
    if (sc.proc.exitCode === null) writeFileSync(ca, '')
    assert.equal(await stop(sc), 0)
  })
  rmSync(ca)
  execFileSync('mkfifo', [ca])
  return sc
}

const scrape = async (sc: Sidecar) => {
  const r = await fetch(`${await sc.url('metrics')}/metrics`, { signal: AbortSignal.timeout(10_000) })
  assert.equal(r.status, 200)
  return r.text()
}

// Two sidecars of their own, side by side.
describe('a certificate file whose read hangs', { concurrency: 2 }, () => {
  test('scrapes while a certificate file read hangs: the certificate worker is down, one read waits, the gateway still writes its sink', async (t) => {
    // More scrapes than libuv's pool has threads (two here; four by default), each past the files'
    // 500 ms snapshot (a scrape waits 300 ms for the certificate worker, then 250 ms more).
    const sc = await withHungCaFile(t, { UV_THREADPOOL_SIZE: '2' })
    for (let i = 0; i < 3; i++) {
      assert.equal(metric(await scrape(sc), 'sia_worker_up', { service: 'certificate' }), 0)
      await sleep(250)
    }
    assert.equal(metric(await scrape(sc), 'sia_worker_up', { service: 'gateway' }), 1)
    const r = await Promise.race([
      post(await sc.url('gateway'), webhook([alert('WhileReadHangs')])),
      sleep(10_000, undefined, { ref: false }).then(() => ({ status: 'no answer in 10 s' })),
    ])
    assert.equal(r.status, 201, 'the sink file was written: the pool had a thread for it')
  })

  test('the status view answers while every thread of the pool waits on a read', async (t) => {
    // One thread in the pool, taken by the certificate file's read at the first scrape: every file
    // read of the process waits behind it, the status view's memory limit (from the cgroup) too.
    const sc = await withHungCaFile(t, { UV_THREADPOOL_SIZE: '1' })
    await scrape(sc)
    const r = await fetch(`${await sc.url('metrics')}/status.json`, { signal: AbortSignal.timeout(10_000) })
    assert.equal(r.status, 200)
    const view = (await r.json()) as { workers: { service: string; enabled: boolean; up: boolean }[] }
    assert.deepEqual(
      view.workers.filter((w) => w.enabled && !w.up).map((w) => w.service),
      ['certificate'],
    )
  })
})
