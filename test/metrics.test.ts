import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { ORDER } from './support/lifecycle.js'
import { parsePromText, type Sample } from './support/prom-text.js'
import { startReady, stop } from './support/sidecar.js'

const find = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))

test('/metrics is one Prometheus exposition with series from every worker and the main thread', async () => {
  const sc = await startReady()
  try {
    const res = await fetch(`${await sc.url('metrics')}/metrics`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
    const samples = parsePromText(await res.text())
    for (const service of ORDER) {
      assert.equal(find(samples, 'sia_worker_up', { service })[0]?.value, 1, `${service} up`)
      assert.equal(
        find(samples, 'sia_worker_tasks', { service }).length,
        1,
        `${service}'s own registry answered`,
      )
      assert.ok(
        (find(samples, 'sia_worker_heap_used_bytes', { service })[0]?.value ?? 0) > 0,
        `${service} heap`,
      )
      assert.ok(find(samples, 'sia_service_start_duration_seconds', { service }).length === 1)
    }
    assert.equal(
      find(samples, 'sia_worker_tasks', { service: 'token' })[0]?.value,
      2,
      'token runs server + refresh-timer',
    )
    // Process-wide metrics come once, from the main thread, without a service label.
    const rss = find(samples, 'process_resident_memory_bytes')
    assert.equal(rss.length, 1)
    assert.equal(rss[0]?.labels.service, undefined)
    assert.ok(find(samples, 'nodejs_heap_size_used_bytes').length === 1)
    // Made in supervisor/default-metrics.ts, not by prom-client: user + system = total, all > 0.
    const cpu = (name: string) => find(samples, name)[0]?.value ?? Number.NaN
    const [user, system, total] = ['user_', 'system_', ''].map((k) => cpu(`process_cpu_${k}seconds_total`))
    assert.ok(user! > 0 && system! >= 0, `process CPU counted: user ${user}, system ${system}`)
    assert.ok(Math.abs(user! + system! - total!) < 1e-3, `process_cpu_seconds_total ${total} = user + system`)
    assert.ok(find(samples, 'memory_report_rss_bytes', { service: 'memory-reporter' }).length === 1)
  } finally {
    assert.equal(await stop(sc), 0)
  }
})

test('a worker that is down is reported as sia_worker_up 0, never as a failed scrape', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-cfg-')), 'sia.yaml')
  writeFileSync(path, 'services:\n  memory-reporter:\n    restart: temporary\n')
  const sc = await startReady({
    env: { SIA_FAILPOINTS: 'memory-reporter.before-task:reporter=crash' },
    args: ['--config', path],
  })
  try {
    await sc.waitForEvent('worker.crashed', { service: 'memory-reporter' })
    const res = await fetch(`${await sc.url('metrics')}/metrics`)
    assert.equal(res.status, 200)
    const samples = parsePromText(await res.text())
    assert.equal(find(samples, 'sia_worker_up', { service: 'memory-reporter' })[0]?.value, 0)
    assert.equal(find(samples, 'sia_worker_up', { service: 'token' })[0]?.value, 1)
    // A temporary worker is never restarted: its crash shows as up 0, not as a restart.
    assert.equal(
      find(samples, 'sia_worker_restarts_total', { service: 'memory-reporter', reason: 'exception' })[0]
        ?.value,
      0,
    )
  } finally {
    await stop(sc)
  }
})

test('memory reporter logs RSS and each worker heap every MEMORY_REPORT_INTERVAL', async () => {
  const sc = await startReady({ env: { MEMORY_REPORT_INTERVAL: '200ms' } })
  try {
    const r = await sc.waitForEvent('memory.report')
    assert.equal(r.service, 'memory-reporter')
    assert.ok((r.rssBytes as number) > 10e6)
    const workers = r.workers as { worker: string; heapUsedBytes: number; heapLimitBytes: number }[]
    assert.deepEqual(
      workers.map((w) => w.worker),
      ORDER,
    )
    for (const w of workers)
      assert.ok(w.heapUsedBytes > 0 && w.heapLimitBytes > w.heapUsedBytes, JSON.stringify(w))
  } finally {
    await stop(sc)
  }
})

/** One raw request with `target` as its request target; resolves to the status line's code. */
function rawGet(base: string, target: string): Promise<number> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () =>
      socket.write(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    )
    let head = ''
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => {
      head += d
    })
    socket.on('close', () => {
      const code = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]
      if (code) resolve(Number(code))
      else reject(new Error(`no status line for ${target}: ${JSON.stringify(head.slice(0, 80))}`))
    })
    socket.on('error', reject)
  })
}

test('request targets Node accepts but no URL parser likes get a 4xx on every port, and no thread ends', async () => {
  const sc = await startReady()
  try {
    for (const service of ['metrics', 'healthcheck', 'token', 'gateway']) {
      const base = await sc.url(service)
      for (const target of ['//', 'http://a:99999/', '/%zz', '*']) {
        const status = await rawGet(base, target)
        assert.ok(status >= 400 && status < 500, `${service} ${target}: ${status}`)
      }
    }
    assert.deepEqual(sc.events('worker.crashed'), [])
    assert.equal((await fetch(`${await sc.url('healthcheck')}/readyz`)).status, 200)
  } finally {
    assert.equal(await stop(sc), 0)
  }
})
