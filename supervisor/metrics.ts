import { monotonicMs } from '../shared/clock.js'
import type { Config } from '../shared/config/types.js'
import type { Collect } from '../shared/loop-delay.js'
import { Counter, Gauge, Registry } from '../shared/prom.js'
import type { LastWorkerError } from '../shared/protocol.js'
import { workerVitals } from '../shared/readiness.js'
import type { ServiceName } from '../shared/services.js'
import { hasLiveThread, type StatusBoard } from '../shared/status-board.js'
import { collectDefaultMetrics } from './default-metrics.js'
import type { ExitReason } from './worker-handle.js'

/** The reasons a restart is counted under (`terminated` ends a run, it restarts nothing). */
const RESTART_REASONS: readonly ExitReason[] = [
  'exception',
  'oom',
  'exit',
  'watchdog',
  'recycled',
  'spawn-failed',
]

/**
 * The main thread's registry: process-wide default metrics (collected here only, once for the
 * process) and the sia_* series about each worker, read from the status board at scrape time so
 * they are there even when a worker is too busy to answer.
 */
export interface SupervisorMetrics {
  registry: Registry
  /** The registry's collection: a scrape, or a view (the status page, a HEAD) that resets nothing. */
  collect: Collect
  restarts: Counter<'service' | 'reason'>
  startSeconds: Gauge<'service'>
  shutdownSeconds: Gauge<'service'>
  /** Records a `worker.crashed` (its log fields), for the status page. */
  noteCrash(service: ServiceName, fields: Record<string, unknown> | undefined): void
  lastErrors(): Partial<Record<ServiceName, LastWorkerError>>
}

export function createSupervisorMetrics(
  board: StatusBoard,
  services: readonly ServiceName[],
  config: () => Config,
): SupervisorMetrics {
  const registry = new Registry()
  const collect = collectDefaultMetrics(registry)
  const registers = [registry]
  const perWorker = (name: string, help: string, read: (s: ServiceName, now: number) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['service'],
      registers,
      // Only a thread that is up: a worker that died (or stays down) has no heap and no loop, and
      // its last figures reported on would keep firing alerts on heap use for a thread long gone.
      collect() {
        this.reset()
        const now = monotonicMs()
        for (const s of services) {
          const value = read(s, now)
          if (value !== undefined) this.set({ service: s }, value)
        }
      },
    })
  const vitals = (s: ServiceName, now: number) => workerVitals(board, config(), s, now)
  perWorker(
    'sia_worker_heap_used_bytes',
    'V8 heap used by the worker',
    (s, now) => vitals(s, now)?.heapUsedBytes,
  )
  perWorker(
    'sia_worker_heap_limit_bytes',
    'V8 heap limit of the worker',
    (s, now) => vitals(s, now)?.heapLimitBytes,
  )
  perWorker(
    'sia_worker_event_loop_utilization',
    'Event-loop utilisation of the worker over the last heartbeat (1 while its heartbeat is stale)',
    (s, now) => vitals(s, now)?.eventLoopUtilization,
  )
  perWorker('sia_worker_heartbeat_age_seconds', 'Seconds since the worker last beat', (s, now) => {
    const sample = board.sample(s)
    if (!hasLiveThread(sample.state)) return undefined
    return sample.heartbeatMs ? (now - sample.heartbeatMs) / 1000 : Number.NaN
  })
  const restarts = new Counter({
    name: 'sia_worker_restarts_total',
    help: 'Worker restarts by reason',
    labelNames: ['service', 'reason'],
    registers,
  })
  // Every reason a restart is counted under, at 0 from the start: Prometheus's increase() cannot
  // see a series' first step from nothing to 1, so an alert on restarts would miss the first.
  for (const s of services) {
    for (const reason of RESTART_REASONS) restarts.inc({ service: s, reason }, 0)
  }
  const lastErrors: Partial<Record<ServiceName, LastWorkerError>> = {}
  return {
    registry,
    collect,
    restarts,
    noteCrash(service, fields = {}) {
      if (fields.reason === 'recycled') return // a planned restart, not an error
      const err = fields.err as (Error & { code?: unknown }) | undefined
      lastErrors[service] = {
        reason: String(fields.reason ?? 'unknown'),
        exitCode: typeof fields.exitCode === 'number' ? fields.exitCode : null,
        at: Date.now(),
        ...(err ? { name: err.name, message: err.message } : {}),
        ...(typeof err?.code === 'string' ? { code: err.code } : {}),
      }
    },
    lastErrors: () => ({ ...lastErrors }),
    startSeconds: new Gauge({
      name: 'sia_service_start_duration_seconds',
      help: 'Duration of the last start of the service',
      labelNames: ['service'],
      registers,
    }),
    shutdownSeconds: new Gauge({
      name: 'sia_service_shutdown_duration_seconds',
      help: 'Duration of the last shutdown of the service',
      labelNames: ['service'],
      registers,
    }),
  }
}
