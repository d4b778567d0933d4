import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { eventually } from './support/eventually.js'
import { alert, metric, post, webhook } from './support/gateway.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

/**
 * A certificate file whose read never returns (a frozen volume; here a FIFO nobody writes) holds
 * one thread of libuv's pool, which every worker of the process shares. The scrapes that read it
 * must not take the rest of the pool, each must answer without it (a file that could not be read)
 * and leave nothing behind, and the status page must answer too.
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

// Sidecars of their own, two side by side.
describe('a certificate file whose read hangs', { concurrency: 2 }, () => {
  test('scrapes while a certificate file read hangs: the file is a read error, one read waits, the gateway still writes its sink', async (t) => {
    // More scrapes than libuv's pool has threads (two here; four by default), each past the 500 ms
    // a file's read is reported for (a scrape waits 300 ms at most, then 250 ms more).
    const sc = await withHungCaFile(t, { UV_THREADPOOL_SIZE: '2' })
    for (let i = 0; i < 3; i++) {
      const text = await scrape(sc)
      assert.equal(metric(text, 'sia_worker_up', { service: 'certificate' }), 1)
      assert.equal(metric(text, 'x509_cert_error', { filename: 'ca.pem' }), 1)
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
    const view = (await r.json()) as {
      workers: { service: string; enabled: boolean; up: boolean }[]
      certificates: { readErrors: number | null }
    }
    // The certificate worker answers by the deadline, its files read errors: the pool's one thread
    // waits on ca.pem, and cert.pem's read behind it.
    assert.deepEqual(
      view.workers.filter((w) => w.enabled && !w.up).map((w) => w.service),
      [],
    )
    assert.ok((view.certificates.readErrors ?? 0) >= 1, `${view.certificates.readErrors} read errors`)
  })

  test('scrapes and views while a certificate file read hangs cost nothing that lasts: each is answered, the certificate worker’s heap does not grow with their number', async (t) => {
    const sc = await withHungCaFile(t, { METRICS_SCRAPE_TIMEOUT: '40ms' })
    const base = await sc.url('metrics')
    // A scrape, a HEAD and a status view are gathered apart: three collects of the certificate
    // worker at a time, each of which waited on the hung read and was kept until the thread ended.
    const collect = async (n: number) => {
      let left = n
      const loop = async (method: string, path: string) => {
        while (left-- > 0) {
          const r = await fetch(`${base}${path}`, { method, signal: AbortSignal.timeout(10_000) })
          assert.equal(r.status, 200)
          await r.arrayBuffer()
        }
      }
      await Promise.all([loop('GET', '/metrics'), loop('HEAD', '/metrics'), loop('GET', '/status.json')])
    }
    const heapUsed = async () => {
      await sleep(1500) // a heartbeat since: the board's figure is the heap now
      return metric(await scrape(sc), 'sia_worker_heap_used_bytes', { service: 'certificate' })!
    }
    await collect(300) // what a first scrape allocates once (code, caches) is not counted
    const before = await heapUsed()
    const COLLECTS = 1200
    await collect(COLLECTS)
    const grown = (await heapUsed()) - before
    t.diagnostic(`certificate heap grew ${(grown / 1024).toFixed(0)} KiB over ${COLLECTS} collects`)
    // 4.5-10 KiB a collect, 5-12 MiB here, when each waited on the read.
    assert.ok(grown < 3 * 2 ** 20, `${(grown / 2 ** 20).toFixed(1)} MiB more after ${COLLECTS} collects`)
    // The worker answered them (a collect that misses the 10 ms left it is up 0, so a few tries).
    await eventually(async () => {
      const text = await scrape(sc)
      const answered =
        metric(text, 'sia_worker_up', { service: 'certificate' }) === 1 &&
        metric(text, 'x509_cert_error', { filename: 'ca.pem' }) === 1 &&
        metric(text, 'x509_cert_not_after', { filename: 'cert.pem' }) !== undefined
      return answered || undefined
    })
  })
})
