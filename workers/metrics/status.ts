import type { MetricObjectWithValues, MetricValue } from 'prom-client'
import { memoryLimitFiles, parseMemoryLimit } from '../../shared/cgroup-memory.js'
import { monotonicMs } from '../../shared/clock.js'
import type { Config } from '../../shared/config/types.js'
import { withDeadline } from '../../shared/deadline.js'
import { readFile } from '../../shared/fs-async.js'
import type { LastWorkerError } from '../../shared/protocol.js'
import { readiness, workerVitals } from '../../shared/readiness.js'
import { SERVICES, type ServiceName } from '../../shared/services.js'
import type { StatusBoard } from '../../shared/status-board.js'

/**
 * The data of the status page (`GET /status`, and `GET /status.json` as is): the status board read
 * at the instant of the view, and one scrape of the registries (the same collect a `/metrics`
 * scrape makes, nothing more). Only states, counts, sizes and times: no label value that could
 * hold a secret is copied except certificate subjects and file names, and no configuration value
 * but the shutdown budget.
 */
export interface StatusView {
  generatedAt: string
  process: {
    phase: string
    ready: boolean
    notReady: { service: string; state: string }[]
    uptimeSeconds: number | null
    residentMemoryBytes: number | null
    /** The container's memory limit (its cgroup's, v1 or v2), null when unlimited or unknown. */
    memoryLimitBytes: number | null
    nodeVersion: string
  }
  shutdown: {
    delaySeconds: number
    timeoutSeconds: number
    /** SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT: the process is out within this plus 1 s. */
    budgetSeconds: number
    /** What terminationGracePeriodSeconds must be at least. */
    minGracePeriodSeconds: number
  }
  workers: WorkerStatus[]
  /**
   * The enabled services that did not answer this view's scrape: their sections' figures are not
   * known (null, or empty lists), never "none".
   */
  unanswered: ServiceName[]
  certificates: {
    readErrors: number | null
    files: CertificateStatus[]
  }
  tokens: {
    enabled: boolean
    types: { type: string; entries: number; bytes: number }[]
    /** The soonest expiry among cached tokens. */
    soonestExpirySeconds: number | null
    fetchErrors: number | null
  }
  gateway: {
    enabled: boolean
    requests: Record<string, number>
    /** Requests per second since an earlier view (null without one at least 1 s old). */
    requestRate: number | null
    createdRate: number | null
    received: Record<string, number>
    created: number | null
    duplicates: number | null
    sinkErrors: number | null
    inflight: number | null
    dedupStoreUp: boolean | null
    meanLatencySeconds: number | null
  }
}

export interface WorkerStatus {
  service: ServiceName
  enabled: boolean
  state: string
  /** Answered this view's scrape in time. */
  up: boolean
  uptimeSeconds: number | null
  restarts: Record<string, number>
  restartsTotal: number
  /** The thread's own figures; null with no thread (down, stopped: the row holds its last one's). */
  heapUsedBytes: number | null
  heapLimitBytes: number | null
  heapPercent: number | null
  eventLoopUtilization: number | null
  heartbeatAgeSeconds: number | null
  startSeconds: number | null
  lastError: { reason: string; at: string; message: string } | null
}

export interface CertificateStatus {
  file: string
  subject: string
  issuer: string
  notAfter: string
  expiresInSeconds: number
  expired: boolean
  /** Within 7 days of expiry and past half of its lifetime: it should have been renewed. */
  renewalDue: boolean
}

type Metric = MetricObjectWithValues<MetricValue<string>>
type Labels = Partial<Record<string, string | number>>

/** Counter totals of recent views, for rates: per process (the page has few viewers), bounded. */
interface Totals {
  at: number
  requests: number
  created: number
}
const history: Totals[] = []
const HISTORY_MAX = 32

export interface StatusSources {
  config: Config
  board: StatusBoard
  metrics: Metric[]
  upServices: ReadonlySet<string>
  lastErrors: Partial<Record<ServiceName, LastWorkerError>>
  now?: number
  /** The monotonic clock heartbeats are written on (shared/clock.ts). */
  monotonicNow?: number
}

export async function buildStatus(src: StatusSources): Promise<StatusView> {
  const { config, board, metrics } = src
  const now = src.now ?? Date.now()
  const byName = new Map(metrics.map((m) => [m.name, m]))
  const values = (name: string) => byName.get(name)?.values ?? []
  const sum = (name: string, match: (l: Labels) => boolean = () => true) => {
    const vs = values(name).filter((v) => match(v.labels) && Number.isFinite(v.value))
    return vs.length ? vs.reduce((n, v) => n + v.value, 0) : null
  }
  const of = (service: string) => (l: Labels) => l.service === service
  const groupBy = (name: string, label: string, match?: (l: Labels) => boolean) => {
    const out: Record<string, number> = {}
    for (const v of values(name)) {
      if (match && !match(v.labels)) continue
      const key = String(v.labels[label] ?? '')
      out[key] = (out[key] ?? 0) + v.value
    }
    return out
  }
  const nonZero = (counts: Record<string, number>) => {
    for (const [k, v] of Object.entries(counts)) if (!v) delete counts[k]
    return counts
  }

  const monotonicNow = src.monotonicNow ?? monotonicMs()
  const r = readiness(board, config, monotonicNow)
  const processStart = sum('process_start_time_seconds')
  const budget = config.shutdownDelay + config.shutdownTimeout

  const workers: WorkerStatus[] = SERVICES.map((service) => {
    const enabled = config.services[service].enabled
    const sample = board.sample(service)
    const restarts = nonZero(groupBy('sia_worker_restarts_total', 'reason', of(service)))
    const startedAt = sum('sia_worker_start_time_seconds', of(service))
    const running = sample.state === 'running'
    // As /metrics: a thread that has ended has no heap or loop to show (its row keeps its last),
    // and a blocked one a busy loop and no heap figure.
    const vitals = enabled ? workerVitals(board, config, service, monotonicNow) : undefined
    const heapUsed = vitals?.heapUsedBytes
    const last = src.lastErrors[service]
    return {
      service,
      enabled,
      state: enabled ? sample.state : 'disabled',
      up: src.upServices.has(service),
      uptimeSeconds: running && startedAt ? Math.max(0, Math.round(now / 1000 - startedAt)) : null,
      restarts,
      restartsTotal: Object.values(restarts).reduce((n, x) => n + x, 0),
      heapUsedBytes: heapUsed ?? null,
      heapLimitBytes: vitals?.heapLimitBytes ?? null,
      heapPercent:
        heapUsed !== undefined && vitals?.heapLimitBytes
          ? Math.round((1000 * heapUsed) / vitals.heapLimitBytes) / 10
          : null,
      eventLoopUtilization: vitals ? Math.round(vitals.eventLoopUtilization * 1000) / 1000 : null,
      heartbeatAgeSeconds: sample.heartbeatMs
        ? Math.max(0, (monotonicNow - sample.heartbeatMs) / 1000)
        : null,
      startSeconds: sum('sia_service_start_duration_seconds', of(service)),
      lastError: last
        ? {
            reason: last.reason,
            at: new Date(last.at).toISOString(),
            message: redact([last.code, last.message].filter(Boolean).join(': ') || last.name || ''),
          }
        : null,
    }
  })

  const unanswered = SERVICES.filter(
    (s) => s !== 'metrics' && config.services[s].enabled && !src.upServices.has(s),
  )

  const notBefore = new Map(
    values('x509_cert_not_before').map((v) => [`${v.labels.filepath}\0${v.labels.serial_number}`, v.value]),
  )
  const certificates: CertificateStatus[] = values('x509_cert_not_after').map((v) => {
    const l = v.labels
    const notAfter = v.value
    const since = notBefore.get(`${l.filepath}\0${l.serial_number}`) ?? notAfter
    const left = notAfter - now / 1000
    return {
      file: String(l.filename ?? ''),
      subject: dn(l, 'subject'),
      issuer: dn(l, 'issuer'),
      notAfter: new Date(notAfter * 1000).toISOString(),
      expiresInSeconds: Math.round(left),
      expired: left <= 0,
      // As the SiaCertificateExpiringSoon alert: within 7 days and past half of its lifetime.
      renewalDue: left < 7 * 86400 && left < (notAfter - since) / 2,
    }
  })
  certificates.sort((a, b) => a.expiresInSeconds - b.expiresInSeconds)

  const tokenEntries = groupBy('cached_token_entries', 'type')
  const tokenBytes = groupBy('cached_token_bytes', 'type')
  const expiries = values('token_expires_in_seconds').map((v) => v.value)

  const requests = groupBy('gateway_requests_total', 'code')
  const requestTotal = Object.values(requests).reduce((n, x) => n + x, 0)
  const created = sum('gateway_signals_created_total')
  const totals: Totals = { at: now, requests: requestTotal, created: created ?? 0 }
  // A gateway that did not answer this view counted nothing: its zeros are not totals, and a
  // rate against them was the whole count since it started, spread over a few seconds.
  const counted = src.upServices.has('gateway')
  // Rates against the newest earlier view at least a second old (counters restart with a worker).
  const earlier = history.findLast((h) => now - h.at >= 1000 && now - h.at <= 600_000)
  const rate = (pick: (t: Totals) => number) => {
    if (!counted || !earlier || pick(totals) < pick(earlier)) return null
    return Math.round((100 * (pick(totals) - pick(earlier))) / ((now - earlier.at) / 1000)) / 100
  }
  const requestRate = rate((t) => t.requests)
  const createdRate = rate((t) => t.created)
  if (counted) history.push(totals)
  if (history.length > HISTORY_MAX) history.splice(0, history.length - HISTORY_MAX)
  const histogram = values('gateway_request_duration_seconds') as (MetricValue<string> & {
    metricName?: string
  })[]
  const latencyCount = histogram.find((v) => v.metricName?.endsWith('_count'))?.value
  const latencyTotal = histogram.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0
  const storeUp = sum('gateway_dedup_store_up')

  return {
    generatedAt: new Date(now).toISOString(),
    process: {
      phase: r.phase,
      ready: r.ready,
      notReady: r.notReady,
      uptimeSeconds: processStart ? Math.max(0, Math.round(now / 1000 - processStart)) : null,
      residentMemoryBytes: sum('process_resident_memory_bytes'),
      memoryLimitBytes: await memoryLimitSoon(),
      nodeVersion: process.version,
    },
    shutdown: {
      delaySeconds: config.shutdownDelay / 1000,
      timeoutSeconds: config.shutdownTimeout / 1000,
      budgetSeconds: budget / 1000,
      minGracePeriodSeconds: Math.ceil((budget + 2000) / 1000),
    },
    workers,
    unanswered,
    certificates: { readErrors: sum('x509_read_errors'), files: certificates },
    tokens: {
      enabled: config.services.token.enabled,
      types: Object.keys(tokenEntries).map((type) => ({
        type,
        entries: tokenEntries[type] ?? 0,
        bytes: tokenBytes[type] ?? 0,
      })),
      soonestExpirySeconds: expiries.length ? Math.min(...expiries) : null,
      fetchErrors: sum('token_fetch_errors_total'),
    },
    gateway: {
      enabled: config.services.gateway.enabled,
      requests,
      requestRate,
      createdRate,
      received: groupBy('gateway_signals_received_total', 'status'),
      created,
      duplicates: sum('gateway_signals_deduplicated_total'),
      sinkErrors: sum('gateway_sink_errors_total'),
      inflight: sum('gateway_inflight_requests'),
      dedupStoreUp: storeUp === null ? null : storeUp > 0,
      meanLatencySeconds: latencyCount ? Math.round((latencyTotal / latencyCount) * 1e4) / 1e4 : null,
    },
  }
}

/** "CN=…, OU=…, O=…" from the x509 labels, the parts that are set. */
function dn(labels: Labels, prefix: string): string {
  return ['CN', 'OU', 'O', 'L', 'ST', 'C']
    .map((p) => [p, labels[`${prefix}_${p}`]] as const)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([p, v]) => `${p}=${v}`)
    .join(', ')
}

/** What of an error message is looked at: the page shows 300 characters of it. */
const REDACT_INPUT_CHARS = 4096

/**
 * An error message as the page shows it: credentials in URLs, PEM blocks and long opaque strings
 * (tokens, keys) cut out, and bounded in length. Error messages should hold none of these; this is
 * the second line of defence.
 */
export function redact(text: string): string {
  // Bounded first: a crash's message is any length, and the patterns below backtrack.
  return (
    text
      .slice(0, REDACT_INPUT_CHARS)
      .replace(/-----BEGIN [^-]+-----[\s\S]*?(-----END [^-]+-----|$)/g, '[pem redacted]')
      // To the last @ of the address: a password written raw may hold an @ or a /. A scheme is
      // short, an address's credentials too: each bounded, so a long run without spaces is linear.
      .replace(/(\b\w{1,32}:\/\/)\S{0,512}@/g, '$1***@')
      .replace(/\b(bearer|basic|token|password|secret)([=:\s]+)\S+/gi, '$1$2***')
      .replace(/[A-Za-z0-9+_=.-]{48,}|[A-Za-z0-9+/=]{64,}/g, '[redacted]')
      .slice(0, 300)
  )
}

/** How long a view waits for the container's memory limit to be read; then it shows none. */
const MEMORY_LIMIT_WAIT_MS = 1000
let limitRead: Promise<number | null> | undefined

/**
 * The container's memory limit, or null if its files are not read within MEMORY_LIMIT_WAIT_MS:
 * the view is answered when the process's file reads stall (libuv's pool taken by reads that
 * hang), and one read at a time is made, not one more each view.
 */
function memoryLimitSoon(): Promise<number | null> {
  limitRead ??= containerMemoryLimit().finally(() => {
    limitRead = undefined
  })
  const read = limitRead
  return withDeadline(
    MEMORY_LIMIT_WAIT_MS,
    () => read,
    () => new Error('the memory limit was not read in time'),
  ).catch(() => null)
}

/** The container's memory limit (shared/cgroup-memory.ts), or null: none, or not Linux. */
async function containerMemoryLimit(): Promise<number | null> {
  const self = await readFile('/proc/self/cgroup', 'utf8').catch(() => '')
  for (const file of memoryLimitFiles(self)) {
    const limit = parseMemoryLimit(await readFile(file, 'utf8').catch(() => ''))
    if (limit !== undefined) return limit
  }
  return null
}
