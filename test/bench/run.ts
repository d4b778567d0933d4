import { randomUUID } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { bigBatch, metric } from '../support/gateway.js'
import { IMAGE_NODE_FLAGS } from '../support/image.js'
import { spawnLoneHealthcheck } from '../support/lone-worker.js'
import { parsePromText } from '../support/prom-text.js'
import { startRedis } from '../support/redis.js'
import { type Sidecar, type SidecarOptions, startSidecar as startTestSidecar } from '../support/sidecar.js'
import { BARE_THREAD, startBareServer } from './bare-server.js'
import { type CurveReport, costCurves } from './curves.js'
import { compareLoad, runLoad } from './load.js'
import { alertPayload } from './load-process.js'
import {
  bareEchoRoundTrips,
  median,
  percentile,
  type Row,
  rssBytes,
  scrapes,
  startSixWorkers,
  threadCpuMs,
  untilOk,
} from './measures.js'

/**
 * `npm run bench`: every figure measured side by side with its reference in one run on this
 * machine, reported as a ratio with PASS/FAIL against the targets of issue 6. A miss is a finding,
 * not a failure: the exit code is 0 unless the bench itself broke.
 */
const DURATION_SEC = Number(process.env.BENCH_DURATION ?? 10)
const REPEAT = Number(process.env.BENCH_REPEAT ?? 10)
const CONNECTIONS = 50

/** BENCH_CONFIG=file: every sidecar of the bench reads that config file (e.g. other resourceLimits). */
/** Every sidecar of the bench starts as the image starts it: with the ENTRYPOINT's node flags. */
function startSidecar(opts: SidecarOptions = {}): Sidecar {
  const file = process.env.BENCH_CONFIG
  return startTestSidecar({
    ...opts,
    ...(file ? { env: { SIA_CONFIG_FILE: file, ...opts.env } } : {}),
    command: (node, argv) => ({ file: node, args: [...IMAGE_NODE_FLAGS, ...argv] }),
  })
}

const rows: Row[] = []
const raw: Record<string, unknown> = {}
const fmt = (n: number, digits = 1) => n.toFixed(digits)

function record(row: Row, data: unknown): void {
  rows.push(row)
  raw[row.figure] = data
  console.error(`bench: ${row.figure}: ${row.value} (reference ${row.reference})`)
}

async function ready(sc: Sidecar, t0: number): Promise<number> {
  return untilOk(`${await sc.url('healthcheck')}/readyz`, t0)
}

async function startupAndShutdown(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-bench-'))
  const warm = startSidecar({ dataDir }) // creates the local CA once, as a pod's first start does
  await ready(warm, performance.now())
  warm.kill()
  await warm.exited
  const readyMs: number[] = []
  const shutdownMs: number[] = []
  const refMs: number[] = []
  for (let i = 0; i < REPEAT; i++) {
    const t0 = performance.now()
    const sc = startSidecar({ dataDir })
    readyMs.push(await ready(sc, t0))
    const t1 = performance.now()
    sc.kill('SIGTERM')
    await sc.exited
    shutdownMs.push(performance.now() - t1)
    const ref = await startSixWorkers()
    refMs.push(ref.ms)
    ref.stop()
  }
  const ratio = median(readyMs) / median(refMs)
  record(
    {
      figure: 'time to ready',
      value: `${fmt(median(readyMs))} ms`,
      reference: `${fmt(median(refMs))} ms (six empty workers)`,
      ratio,
      target: '≤ 1.5×',
      pass: ratio <= 1.5,
    },
    { readyMs, refMs },
  )
  record(
    {
      figure: 'shutdown latency (idle)',
      value: `${fmt(median(shutdownMs))} ms`,
      reference: '—',
      target: 'absolute',
    },
    { shutdownMs },
  )
}

/** Idle RSS of a sidecar started with `args`, after 3s of settling. */
async function idleRss(args: string[] = []): Promise<{ rss: number; sc: Sidecar }> {
  const sc = startSidecar({ args })
  await ready(sc, performance.now())
  await sleep(3000)
  return { rss: rssBytes(sc.proc.pid!), sc }
}

async function memory(): Promise<void> {
  // Before the default resourceLimits (issue 11): every worker on V8's own limits.
  const dir = mkdtempSync(join(tmpdir(), 'sia-bench-limits-'))
  const unlimited = join(dir, 'config.json')
  const services = ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck']
  writeFileSync(
    unlimited,
    JSON.stringify({ services: Object.fromEntries(services.map((s) => [s, { resourceLimits: {} }])) }),
  )
  const before = await idleRss(['--config', unlimited])
  before.sc.kill()
  await before.sc.exited
  const { rss, sc } = await idleRss()
  const samples = parsePromText(await (await fetch(`${await sc.url('metrics')}/metrics`)).text())
  const heaps = Object.fromEntries(
    samples.filter((s) => s.name === 'sia_worker_heap_used_bytes').map((s) => [s.labels.service, s.value]),
  )
  sc.kill()
  await sc.exited
  const ref = await startSixWorkers()
  await sleep(3000)
  const refRss = rssBytes(ref.pid)
  ref.stop()
  const ratio = rss / refRss
  record(
    {
      figure: 'idle RSS, six services',
      value: `${fmt(rss / 2 ** 20)} MiB`,
      reference: `${fmt(refRss / 2 ** 20)} MiB (node + six idle workers)`,
      ratio,
      target: '≤ 1.3×',
      pass: ratio <= 1.3,
    },
    { rss, refRss, workerHeapUsedBytes: heaps },
  )
  record(
    {
      figure: 'idle RSS, default resourceLimits vs none',
      value: `${fmt(rss / 2 ** 20)} MiB`,
      reference: `${fmt(before.rss / 2 ** 20)} MiB (no resourceLimits)`,
      ratio: rss / before.rss,
      target: '≤ 1× (limits cost no memory)',
      pass: rss <= before.rss,
    },
    { rss, unlimitedRss: before.rss },
  )
}

/**
 * Where the idle RSS goes: each worker's marginal cost, the sidecar with all six services less the
 * sidecar with all but that one, against the marginal cost of an empty worker (six empty workers
 * less five). Marginal, because RSS differences from a near-empty process mislead: the allocator
 * keeps what a thread that ended freed, and the next thread reuses it. Medians of three starts.
 */
async function memoryPerWorker(): Promise<void> {
  const services = ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck']
  const addresses: Record<string, string> = {
    token: 'TOKEN_SERVER_ADDR',
    gateway: 'GATEWAY_ADDR',
    metrics: 'METRICS_SERVER_ADDR',
    healthcheck: 'HEALTH_CHECK_ADDR',
  }
  const dir = mkdtempSync(join(tmpdir(), 'sia-bench-per-worker-'))
  const median3 = async (one: () => Promise<number>) => median([await one(), await one(), await one()])
  const rssWithout = (left: string | undefined) =>
    median3(async () => {
      const file = join(dir, `without-${left ?? 'none'}.json`)
      writeFileSync(file, JSON.stringify({ services: left ? { [left]: { enabled: false } } : {} }))
      const env: Record<string, string> = left && addresses[left] ? { [addresses[left]]: '' } : {}
      const sc = startSidecar({ args: ['--config', file], env })
      await sc.waitForEvent('supervisor.ready', {}, 30_000)
      await sleep(3000)
      const rss = rssBytes(sc.proc.pid!)
      sc.kill()
      await sc.exited
      return rss
    })
  const emptyRss = (n: number) =>
    median3(async () => {
      const ref = await startSixWorkers(n)
      await sleep(2000)
      const rss = rssBytes(ref.pid)
      ref.stop()
      return rss
    })
  const oneEmpty = (await emptyRss(6)) - (await emptyRss(5))
  const all = await rssWithout(undefined)
  const mib = (b: number) => `${fmt(b / 2 ** 20)} MiB`
  let workers = 0
  for (const s of services) {
    const added = all - (await rssWithout(s))
    workers += added
    record(
      {
        figure: `memory: ${s} worker (marginal)`,
        value: `+${mib(added)}`,
        reference: `+${mib(oneEmpty)} (an empty worker)`,
        ratio: added / oneEmpty,
        target: 'report',
      },
      { added, oneEmpty },
    )
  }
  record(
    {
      figure: 'memory: the rest (node, the supervisor, what threads share)',
      value: mib(all - workers),
      reference: `${mib((await emptyRss(6)) - 6 * oneEmpty)} (node with six empty workers, less theirs)`,
      target: 'report',
    },
    { all, workers },
  )
}

async function tokenServer(): Promise<void> {
  const sc = startSidecar()
  await ready(sc, performance.now())
  const base = await sc.url('token')
  const body = JSON.stringify({ domain: 'bench', role: 'reader' })
  const sample = await fetch(`${base}/accesstoken`, { method: 'POST', body })
  const sampleBody = await sample.text()
  const headerReq = { 'x-athenz-domain': 'bench', 'x-athenz-role': 'reader' }
  const hSample = await fetch(`${base}/`, { headers: headerReq })
  const hBody = await hSample.text()
  // The reference answers with the same headers (both tokens), less those Node adds itself.
  const hHeaders = Object.fromEntries(
    [...hSample.headers].filter(([k]) => !['date', 'connection', 'keep-alive', 'content-length'].includes(k)),
  )
  const bare = await startBareServer({ kind: 'json', body: sampleBody })
  const bareH = await startBareServer({ kind: 'json', body: hBody, headers: hHeaders })
  try {
    for (const [figure, url, bareUrl, method, headers, reqBody] of [
      ['token server POST /accesstoken', `${base}/accesstoken`, bare.url, 'POST', {}, body],
      ['token server header mode GET /', `${base}/`, bareH.url, 'GET', headerReq, undefined],
    ] as const) {
      const job = {
        connections: CONNECTIONS,
        durationSec: DURATION_SEC,
        method,
        headers,
        ...(reqBody ? { body: reqBody } : {}),
      }
      const { it, ref, ratio, p99Ratio } = await compareLoad({ ...job, url }, bareUrl)
      record(
        {
          figure,
          value: `${fmt(it.reqPerSec, 0)} req/s, p99 ${it.p99Ms} ms (${it.non2xx + it.errors} failed)`,
          reference: `${fmt(ref.reqPerSec, 0)} req/s, p99 ${ref.p99Ms} ms (bare node:http worker)`,
          ratio,
          target: '≥ 0.9× req/s, p99 ≤ 1.5×',
          pass: ratio >= 0.9 && p99Ratio <= 1.5 && it.non2xx + it.errors === 0,
        },
        { it, ref },
      )
    }
  } finally {
    await bare.close()
    await bareH.close()
    sc.kill()
    await sc.exited
  }
}

async function controlRoundTrip(): Promise<void> {
  const { handle: h } = spawnLoneHealthcheck()
  const n = 10_000
  const times: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    await h.rpc.request('ping', null, 5000)
    times.push(performance.now() - t0)
  }
  await h.terminate('terminated')
  const ref = await bareEchoRoundTrips(n)
  const ratio = median(times) / median(ref)
  record(
    {
      figure: 'control round trip (10k pings)',
      value: `p50 ${fmt(median(times) * 1000, 0)} µs, p99 ${fmt(percentile(times, 99) * 1000, 0)} µs`,
      reference: `p50 ${fmt(median(ref) * 1000, 0)} µs, p99 ${fmt(percentile(ref, 99) * 1000, 0)} µs (bare MessagePort echo)`,
      ratio,
      target: 'p50 ≤ 2×',
      pass: ratio <= 2,
    },
    {
      p50Ms: median(times),
      p99Ms: percentile(times, 99),
      refP50Ms: median(ref),
      refP99Ms: percentile(ref, 99),
    },
  )
}

async function gateway(): Promise<void> {
  const redis = await startRedis()
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-bench-'))
  const sinkFile = join(dataDir, 'alerts.jsonl')
  const env = { REDIS_URL: redis.url, GATEWAY_SINK_FILE: sinkFile, GATEWAY_MAX_INFLIGHT: '100000' }
  const sc = startSidecar({ env, dataDir })
  try {
    await ready(sc, performance.now())
    const url = `${await sc.url('gateway')}/api/v1/signals/prometheus`
    const probe = await fetch(url, {
      method: 'POST',
      body: alertPayload(randomUUID()),
      headers: { 'content-type': 'application/json' },
    })
    if (probe.status !== 201) {
      record(
        {
          figure: 'gateway webhook',
          value: `not measured: probe answered ${probe.status}`,
          reference: '—',
          target: '≥ 0.7×',
          pass: false,
        },
        {},
      )
      return
    }
    const bare = await startBareServer({
      kind: 'gateway',
      redisUrl: redis.url,
      sinkFile: join(dataDir, 'reference.jsonl'),
    })
    const job = {
      connections: CONNECTIONS,
      durationSec: DURATION_SEC,
      method: 'POST' as const,
      uniqueAlert: true,
      headers: { 'content-type': 'application/json' },
    }
    const cpu = {
      it: () => threadCpuMs(sc.proc.pid!, 'gateway'),
      ref: () => threadCpuMs(process.pid, BARE_THREAD.gateway),
    }
    const { it, ref, ratio, cpuPerRequest } = await compareLoad({ ...job, url }, bare.url, 3, cpu)
    await bare.close()
    record(
      {
        figure: 'gateway webhook, 1 alert, Redis dedup + file sink',
        value: `${fmt(it.reqPerSec, 0)} req/s, p99 ${it.p99Ms} ms (${it.non2xx + it.errors} failed)`,
        reference: `${fmt(ref.reqPerSec, 0)} req/s, p99 ${ref.p99Ms} ms (node:http: parse, one Redis round trip, group-committed append + fdatasync)`,
        ratio,
        target: '≥ 0.8× req/s',
        pass: ratio >= 0.8,
      },
      { it, ref },
    )
    if (cpuPerRequest) {
      record(
        {
          figure: 'gateway webhook, 1 alert: CPU per request of the serving thread',
          value: `${fmt(cpuPerRequest.it, 0)} µs (the gateway worker)`,
          reference: `${fmt(cpuPerRequest.ref, 0)} µs (the reference's thread)`,
          ratio: cpuPerRequest.it / cpuPerRequest.ref,
          target: 'report',
        },
        cpuPerRequest,
      )
    }
  } finally {
    sc.kill()
    await sc.exited
    await redis.stop()
  }
  await gatewayUnderShutdown()
}

/** Sustained webhooks, SIGTERM mid-run: every 2xx must be in the sink (lost must be 0). */
async function gatewayUnderShutdown(): Promise<void> {
  const redis = await startRedis()
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-bench-'))
  const sinkFile = join(dataDir, 'alerts.jsonl')
  const sc = startSidecar({
    env: { REDIS_URL: redis.url, GATEWAY_SINK_FILE: sinkFile, GATEWAY_MAX_INFLIGHT: '100000' },
    dataDir,
  })
  await ready(sc, performance.now())
  const url = `${await sc.url('gateway')}/api/v1/signals/prometheus`
  const accepted = new Set<string>()
  let refused = 0
  let stopped = false
  const client = async () => {
    while (!stopped) {
      const fp = randomUUID().replaceAll('-', '')
      try {
        const res = await fetch(url, {
          method: 'POST',
          body: alertPayload(fp),
          headers: { 'content-type': 'application/json' },
        })
        await res.arrayBuffer()
        if (res.status >= 200 && res.status < 300) accepted.add(fp)
        else refused++
      } catch {
        refused++
        await sleep(5)
      }
    }
  }
  const clients = Array.from({ length: 32 }, client)
  await sleep(2000)
  sc.kill('SIGTERM')
  const { code } = await sc.exited
  stopped = true
  await Promise.all(clients)
  await redis.stop()
  let sunk = new Set<string>()
  try {
    sunk = new Set(
      readFileSync(sinkFile, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { fingerprint: string }).fingerprint),
    )
  } catch {}
  const lost = [...accepted].filter((fp) => !sunk.has(fp)).length
  record(
    {
      figure: 'gateway under shutdown (SIGTERM mid-load)',
      value: `${accepted.size} answered 2xx, ${lost} lost, ${refused} refused, exit ${code}`,
      reference: '—',
      target: '0 lost',
      pass: lost === 0 && accepted.size > 0,
    },
    { accepted: accepted.size, lost, refused, exitCode: code },
  )
}

/** The longest event-loop delay of one worker since the previous scrape (the scrape resets it). */
async function loopDelayMs(metricsUrl: string, service: string): Promise<number> {
  // The main thread's prom-client may print `Nan` for its own lag metrics right after a scrape,
  // which the strict reader refuses: read just the one series.
  const text = await (await fetch(metricsUrl)).text()
  return (metric(text, 'sia_worker_event_loop_delay_max_seconds', { service }) ?? Number.NaN) * 1000
}

/** A 1 MiB batch (the default GATEWAY_MAX_BODY_BYTES), Redis dedup and file sink: the loop's longest block. */
async function gatewayLargeBatch(): Promise<void> {
  const redis = await startRedis()
  const sc = startSidecar({ env: { REDIS_URL: redis.url } })
  try {
    await ready(sc, performance.now())
    const url = `${await sc.url('gateway')}/api/v1/signals/prometheus`
    const metricsUrl = `${await sc.url('metrics')}/metrics`
    const send = async (payload: unknown) => {
      const res = await fetch(url, {
        method: 'POST',
        body: JSON.stringify(payload),
        headers: { 'content-type': 'application/json' },
      })
      await res.arrayBuffer()
      return res.status
    }
    await send(bigBatch(128 * 1024, 'Warm').payload)
    const blocks: number[] = []
    const took: number[] = []
    let count = 0
    let failed = 0
    for (let i = 0; i < REPEAT; i++) {
      const batch = bigBatch(1024 * 1024 - 1024, `Batch${i}x`)
      count = batch.count
      await loopDelayMs(metricsUrl, 'gateway')
      const t0 = performance.now()
      if ((await send(batch.payload)) !== 201) failed++
      took.push(performance.now() - t0)
      blocks.push(await loopDelayMs(metricsUrl, 'gateway'))
    }
    record(
      {
        figure: `gateway 1 MiB batch (${count} alerts), longest loop block`,
        value: `median ${fmt(median(blocks), 0)} ms, max ${fmt(Math.max(...blocks), 0)} ms (batch answered in ${fmt(median(took), 0)} ms, ${failed} failed)`,
        reference: '—',
        target: '≤ 50 ms',
        pass: median(blocks) <= 50 && failed === 0,
      },
      { blocks, took, count, failed },
    )
  } finally {
    sc.kill()
    await sc.exited
    await redis.stop()
  }
}

/**
 * A cached token's latency while the cache holds 5,000 keys in use and refreshes every 5 s (each
 * refresh re-fetches the keys used since the previous one): autocannon on one cached key, while a
 * background client keeps the 5,000 keys in use.
 */
async function tokenUnderRefresh(): Promise<void> {
  const keys = 5000
  const sc = startSidecar({ env: { TOKEN_REFRESH_INTERVAL: '5s', GATEWAY_ADDR: '', LOG_LEVEL: 'info' } })
  let stopped = false
  let failed = 0
  try {
    await ready(sc, performance.now())
    const base = await sc.url('token')
    const ask = async (role: string) => {
      try {
        const res = await fetch(`${base}/accesstoken`, {
          method: 'POST',
          body: JSON.stringify({ domain: 'bench', role }),
        })
        await res.arrayBuffer()
        if (res.status !== 200) failed++
      } catch {
        failed++
      }
    }
    const roles = Array.from({ length: keys }, (_, i) => `r${i}`)
    const user = async (lane: number, lanes: number) => {
      do {
        for (let i = lane; i < roles.length && !stopped; i += lanes) await ask(roles[i]!)
      } while (!stopped)
    }
    // Fill the cache, then keep every key in use while the load runs.
    const filling = Array.from({ length: 8 }, (_, lane) =>
      (async () => {
        for (let i = lane; i < roles.length; i += 8) await ask(roles[i]!)
      })(),
    )
    await Promise.all(filling)
    await ask('cached')
    const users = Array.from({ length: 4 }, (_, lane) => user(lane, 4))
    const refreshesBefore = sc.events('token.cache.updated').length
    const it = await runLoad({
      url: `${base}/accesstoken`,
      connections: 10,
      durationSec: Math.max(DURATION_SEC, 15),
      method: 'POST',
      body: JSON.stringify({ domain: 'bench', role: 'cached' }),
    })
    stopped = true
    await Promise.all(users)
    const refreshes = sc.events('token.cache.updated').slice(refreshesBefore)
    const refetched = refreshes.map((r) => (r.accesstoken as { updated: number }).updated)
    const faults = ['worker.watchdog', 'worker.crashed'].flatMap((e) => sc.events(e)).length
    const bad = it.non2xx + it.errors + failed
    record(
      {
        figure: `cached token under refresh (${keys} keys in use, 5 s refresh)`,
        value: `p99 ${it.p99Ms} ms, ${fmt(it.reqPerSec, 0)} req/s; ${refreshes.length} refreshes re-fetched ${refetched.join('/')}; ${bad} failed, ${faults} worker faults`,
        reference: '—',
        target: 'p99 ≤ 50 ms',
        pass: it.p99Ms <= 50 && bad === 0 && faults === 0 && refreshes.length > 0,
      },
      { it, refetched, failed, faults },
    )
  } finally {
    stopped = true
    sc.kill()
    await sc.exited
  }
}

/**
 * The scrape over service ports: the metrics service collects the supervisor's and every worker's
 * registry in parallel and merges them. Idle and under gateway load, against the same exposition
 * built from one registry in one thread (the series parsed back, set in a registry, serialised).
 */
async function scrape(): Promise<void> {
  const sc = startSidecar({ env: { GATEWAY_MAX_INFLIGHT: '100000' } })
  try {
    await ready(sc, performance.now())
    const url = `${await sc.url('metrics')}/metrics`
    await scrapes(url, 20) // warm-up
    const idle = await scrapes(url, 200)
    const load = runLoad({
      connections: CONNECTIONS,
      durationSec: DURATION_SEC,
      method: 'POST',
      uniqueAlert: true,
      headers: { 'content-type': 'application/json' },
      url: `${await sc.url('gateway')}/api/v1/signals/prometheus`,
    })
    await sleep(1000)
    const busy = await scrapes(url, 100)
    await load
    const { Registry, Gauge } = await import('prom-client')
    const one = new Registry()
    const series = parsePromText(idle.text)
    const gauges = new Map<string, InstanceType<typeof Gauge>>()
    for (const sample of series) {
      const labelNames = Object.keys(sample.labels)
      const key = `${sample.name}|${labelNames.join(',')}`
      let g = gauges.get(key)
      if (!g) {
        g = new Gauge({
          name: `ref_${gauges.size}_${sample.name}`.slice(0, 200),
          help: 'x',
          labelNames,
          registers: [one],
        })
        gauges.set(key, g)
      }
      g.set(sample.labels, Number.isFinite(sample.value) ? sample.value : 0)
    }
    const ref: number[] = []
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now()
      await one.metrics()
      ref.push(performance.now() - t0)
    }
    const p = (xs: number[], q: number) => fmt(percentile(xs, q), 1)
    record(
      {
        figure: `/metrics scrape (${series.length} series), idle / under gateway load`,
        value: `idle p50 ${p(idle.times, 50)} ms, p99 ${p(idle.times, 99)} ms; loaded p50 ${p(busy.times, 50)} ms, p99 ${p(busy.times, 99)} ms`,
        reference: `p50 ${p(ref, 50)} ms, p99 ${p(ref, 99)} ms (one registry, one thread, no HTTP)`,
        ratio: median(idle.times) / median(ref),
        target: 'report',
      },
      { idle: idle.times, busy: busy.times, ref, series: series.length },
    )
  } finally {
    sc.kill()
    await sc.exited
  }
}

const curveReports: CurveReport[] = []
async function curves(): Promise<void> {
  curveReports.push(
    ...(await costCurves({ startSidecar, durationSec: DURATION_SEC, connections: CONNECTIONS })),
  )
  for (const c of curveReports) console.error(`bench: ${c.name}: ${c.lines.join('; ')}`)
}

/**
 * BENCH_ONLY=name,name runs only those figures (names below), BENCH_SKIP=name,name all but those;
 * BENCH_RESULTS is where the JSON goes (bench/results.json).
 */
const FIGURES: Record<string, () => Promise<void>> = {
  startup: startupAndShutdown,
  memory,
  'memory-per-worker': memoryPerWorker,
  control: controlRoundTrip,
  token: tokenServer,
  gateway,
  'gateway-batch': gatewayLargeBatch,
  'token-refresh': tokenUnderRefresh,
  scrape,
  curves,
}

async function main(): Promise<void> {
  const t0 = performance.now()
  const only = process.env.BENCH_ONLY?.split(',').filter(Boolean)
  const skip = process.env.BENCH_SKIP?.split(',').filter(Boolean) ?? []
  for (const [name, figure] of Object.entries(FIGURES)) {
    if ((!only || only.includes(name)) && !skip.includes(name)) await figure()
  }
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`
  const table = [
    `Machine: ${machine}; load: autocannon, ${CONNECTIONS} connections, ${DURATION_SEC}s per run, loopback.`,
    '',
    '| figure | sia-supervisor | reference (same run) | ratio | target | verdict |',
    '|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.figure} | ${r.value} | ${r.reference} | ${r.ratio === undefined ? '—' : `${fmt(r.ratio, 2)}×`} | ${r.target} | ${r.pass === undefined ? '—' : r.pass ? 'PASS' : 'FAIL'} |`,
    ),
    ...curveReports.flatMap((c) => [
      '',
      `${c.name}${c.png ? ` (${c.png.slice(process.cwd().length + 1)})` : ''}:`,
      ...c.lines.map((l) => `- ${l}`),
    ]),
  ].join('\n')
  mkdirSync('bench', { recursive: true })
  writeFileSync(
    process.env.BENCH_RESULTS ?? 'bench/results.json',
    `${JSON.stringify({ date: new Date().toISOString(), machine, seconds: (performance.now() - t0) / 1000, rows, curves: curveReports, raw }, null, 2)}\n`,
  )
  console.log(table)
}

await main()
