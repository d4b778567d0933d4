import { cpSync, mkdirSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { startRedis } from '../support/redis.js'
import type { Sidecar, SidecarOptions } from '../support/sidecar.js'
import { startBareServer } from './bare-server.js'
import { type Chart, writeChart } from './chart.js'
import { compareLoad } from './load.js'
import { median, percentile, rssBytes, scrapes, untilOk } from './measures.js'

/**
 * How the costs grow (issue 14): RSS and scrape latency against the token cache's entries (each
 * cached key is one series), gateway throughput and p99 against the batch size (against the fair
 * reference at each size), and time to ready against the number of role certificates. Each curve
 * is printed and drawn into bench/<name>.svg and .png.
 */
export interface CurveContext {
  startSidecar(opts?: SidecarOptions): Sidecar
  durationSec: number
  connections: number
}

export interface CurveReport {
  name: string
  /** One line per point, for the console and results.json. */
  lines: string[]
  png?: string
}

const fmt = (n: number, digits = 1) => n.toFixed(digits)

async function ready(sc: Sidecar, t0: number): Promise<number> {
  return untilOk(`${await sc.url('healthcheck')}/readyz`, t0)
}

function draw(name: string, chart: Chart): string | undefined {
  mkdirSync('bench', { recursive: true })
  return writeChart(join(process.cwd(), 'bench', name), chart)
}

async function scrapeTimes(url: string, n: number): Promise<{ times: number[]; series: number }> {
  const { times, text } = await scrapes(url, n)
  return { times, series: text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length }
}

/** Fills the token cache to 0…20k keys: RSS, and the scrape (one series per cached key). */
async function tokenCache(ctx: CurveContext): Promise<CurveReport[]> {
  const steps = [0, 2500, 5000, 10_000, 20_000]
  // Access tokens only, the ones it asks for: two caches of 20k would not fit the default token
  // heap beside its connections (load.ts refuses them), one does.
  const sc = ctx.startSidecar({
    env: {
      TOKEN_CACHE_MAX_ENTRIES: '20000',
      TOKEN_CACHE_MAX_BYTES: String(128 * 2 ** 20),
      TOKEN_TYPE: 'accesstoken',
      GATEWAY_ADDR: '',
    },
  })
  const rss: [number, number][] = []
  const p50: [number, number][] = []
  const p99: [number, number][] = []
  const lines: string[] = []
  const scrapeLines: string[] = []
  try {
    await ready(sc, performance.now())
    const base = await sc.url('token')
    const metricsUrl = `${await sc.url('metrics')}/metrics`
    let filled = 0
    for (const target of steps) {
      const lanes = Array.from({ length: 8 }, (_, lane) =>
        (async () => {
          for (let i = filled + lane; i < target; i += 8) {
            const res = await fetch(`${base}/accesstoken`, {
              method: 'POST',
              body: JSON.stringify({ domain: 'bench', role: `c${i}` }),
            })
            await res.arrayBuffer()
          }
        })(),
      )
      await Promise.all(lanes)
      filled = target
      await sleep(1500)
      const mib = rssBytes(sc.proc.pid!) / 2 ** 20
      const s = await scrapeTimes(metricsUrl, 20)
      rss.push([target, Number(fmt(mib))])
      p50.push([s.series, Number(fmt(percentile(s.times, 50)))])
      p99.push([s.series, Number(fmt(percentile(s.times, 99)))])
      lines.push(`${target} cached tokens: RSS ${fmt(mib)} MiB`)
      scrapeLines.push(
        `${s.series} series: scrape p50 ${fmt(percentile(s.times, 50))} ms, p99 ${fmt(percentile(s.times, 99))} ms`,
      )
    }
  } finally {
    sc.kill()
    await sc.exited
  }
  return [
    {
      name: 'rss-vs-token-cache',
      lines,
      png: draw('rss-vs-token-cache', {
        title: 'Idle RSS against cached tokens',
        xLabel: 'token cache entries',
        yLabel: 'RSS (MiB)',
        series: [{ name: 'sia-supervisor', points: rss }],
      }),
    },
    {
      name: 'scrape-vs-series',
      lines: scrapeLines,
      png: draw('scrape-vs-series', {
        title: '/metrics scrape latency against series',
        xLabel: 'series in the exposition',
        yLabel: 'latency (ms)',
        series: [
          { name: 'p50', points: p50 },
          { name: 'p99', points: p99 },
        ],
      }),
    },
  ]
}

/** Webhooks of 1, 10 and 100 alerts, each fresh: alerts/s and p99, against the fair reference. */
async function gatewayBatches(ctx: CurveContext): Promise<CurveReport[]> {
  const sizes = [1, 10, 100]
  const redis = await startRedis()
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-bench-curve-'))
  const sc = ctx.startSidecar({
    env: {
      REDIS_URL: redis.url,
      GATEWAY_SINK_FILE: join(dataDir, 'alerts.jsonl'),
      GATEWAY_MAX_INFLIGHT: '100000',
    },
    dataDir,
  })
  const bare = await startBareServer({
    kind: 'gateway',
    redisUrl: redis.url,
    sinkFile: join(dataDir, 'ref.jsonl'),
  })
  const ours: [number, number][] = []
  const refs: [number, number][] = []
  const oursP99: [number, number][] = []
  const refsP99: [number, number][] = []
  const lines: string[] = []
  try {
    await ready(sc, performance.now())
    const url = `${await sc.url('gateway')}/api/v1/signals/prometheus`
    for (const n of sizes) {
      const job = {
        connections: ctx.connections,
        durationSec: ctx.durationSec,
        method: 'POST' as const,
        uniqueAlert: true,
        alertsPerRequest: n,
        headers: { 'content-type': 'application/json' },
      }
      const { it, ref, ratio } = await compareLoad({ ...job, url }, bare.url)
      ours.push([n, Math.round(it.reqPerSec * n)])
      refs.push([n, Math.round(ref.reqPerSec * n)])
      oursP99.push([n, it.p99Ms])
      refsP99.push([n, ref.p99Ms])
      lines.push(
        `${n} alert(s) a batch: ${fmt(it.reqPerSec * n, 0)} alerts/s, p99 ${it.p99Ms} ms (${it.non2xx + it.errors} failed); reference ${fmt(ref.reqPerSec * n, 0)} alerts/s, p99 ${ref.p99Ms} ms (${fmt(ratio, 2)}×)`,
      )
    }
  } finally {
    await bare.close()
    sc.kill()
    await sc.exited
    await redis.stop()
  }
  return [
    {
      name: 'gateway-throughput-vs-batch',
      lines,
      png: draw('gateway-throughput-vs-batch', {
        title: 'Gateway throughput against batch size (Redis dedup, fdatasync file sink)',
        xLabel: 'alerts a webhook',
        yLabel: 'alerts stored per second',
        series: [
          { name: 'sia-supervisor', points: ours },
          { name: 'fair reference', points: refs },
        ],
      }),
    },
    {
      name: 'gateway-p99-vs-batch',
      lines: [],
      png: draw('gateway-p99-vs-batch', {
        title: 'Gateway p99 latency against batch size',
        xLabel: 'alerts a webhook',
        yLabel: 'p99 (ms)',
        series: [
          { name: 'sia-supervisor', points: oursP99 },
          { name: 'fair reference', points: refsP99 },
        ],
      }),
    },
  ]
}

/** A cold start issuing 1, 10 and 50 role certificates (the local authority already exists). */
async function roleCertificates(ctx: CurveContext): Promise<CurveReport[]> {
  const counts = [1, 10, 50]
  const warm = mkdtempSync(join(tmpdir(), 'sia-bench-ca-'))
  const first = ctx.startSidecar({ dataDir: warm })
  await ready(first, performance.now())
  first.kill()
  await first.exited
  const points: [number, number][] = []
  const lines: string[] = []
  for (const n of counts) {
    const roles = Array.from({ length: n }, (_, i) => `bench:role.r${i}`).join(',')
    const times: number[] = []
    for (let i = 0; i < 3; i++) {
      const dataDir = mkdtempSync(join(tmpdir(), 'sia-bench-roles-'))
      cpSync(join(warm, 'authority'), join(dataDir, 'authority'), { recursive: true })
      const t0 = performance.now()
      const sc = ctx.startSidecar({ dataDir, env: { TARGET_DOMAIN_ROLES: roles } })
      try {
        times.push(await ready(sc, t0))
      } finally {
        sc.kill()
        await sc.exited
      }
    }
    points.push([n, Math.round(median(times))])
    lines.push(`${n} role certificate(s): ready in ${fmt(median(times), 0)} ms (median of 3)`)
  }
  return [
    {
      name: 'ready-vs-role-certs',
      lines,
      png: draw('ready-vs-role-certs', {
        title: 'Time to ready against role certificates (first start)',
        xLabel: 'role certificates',
        yLabel: 'time to ready (ms)',
        series: [{ name: 'sia-supervisor', points }],
      }),
    },
  ]
}

export async function costCurves(ctx: CurveContext): Promise<CurveReport[]> {
  return [...(await tokenCache(ctx)), ...(await gatewayBatches(ctx)), ...(await roleCertificates(ctx))]
}
