import type { MessagePort } from 'node:worker_threads'
import type { MetricObjectWithValues, MetricValue } from 'prom-client'
import type { Config } from './config/types.js'
import type { Target } from './ports/apis.js'
import type { ServiceName } from './services.js'

/**
 * The workerData of a worker started ahead of the configuration (supervisor/prespawn.ts): its
 * WorkerInit comes as the first message on its parent port instead.
 */
export const AWAIT_INIT = 'sia:await-init'

/** What the supervisor hands each worker at spawn (structured-cloned, the port transferred). */
export interface WorkerInit {
  service: ServiceName
  config: Config
  board: SharedArrayBuffer
  failpointCounters: SharedArrayBuffer
  /** The cell of this thread's death notice (death-notice.ts). */
  deathNotice: SharedArrayBuffer
  /** The state every thread's stdout lines share (stdout-sink.ts). */
  stdout: SharedArrayBuffer
  /** Started to replace a worker that still serves (a reload, a recycle), not after one ended. */
  successor: boolean
  /** The configuration the service ran on before this thread's (a reload's): what it wrote may be owed a cleanup. */
  previous?: Config
  control: MessagePort
}

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[]

export interface ShutdownReport {
  /** A task missed the deadline and was cut short: counts as a missed shutdown deadline. */
  timedOut: boolean
}

/** How a worker last ended on its own (`worker.crashed`): no stack, only what an operator reads. */
export interface LastWorkerError {
  reason: string
  exitCode: number | null
  /** Epoch ms. */
  at: number
  name?: string
  code?: string
  message?: string
}

export interface ShutdownRequest {
  deadlineMs: number
  /**
   * Another worker of the service goes on (a reload's or a recycle's successor, or the worker a
   * failed successor gave back to): what ends with the service, not with this thread, is kept.
   */
  replaced: boolean
}

/** Requests the supervisor sends to a worker. */
export interface WorkerOps {
  [op: string]: { args: unknown; result: unknown }
  start: { args: null; result: null }
  /** The run was cancelled while this worker starts: abort the start's waits (no reply needed). */
  cancel: { args: null; result: null }
  /** Aborts a start in flight, waits for it, then stops every task and runs the cleanups. */
  shutdown: { args: ShutdownRequest; result: ShutdownReport }
  /** Serve the service's API to a caller on `port`: only `methods`, those it may call (DESIGN.md §9). */
  'port.serve': { args: { port: MessagePort; methods: readonly string[] }; result: null }
  /** `port` now leads to `target`'s current worker, `server` (an id the supervisor gives each). */
  'port.connect': { args: { target: Target; port: MessagePort; server: number }; result: null }
  /**
   * `target`'s worker `server` is gone: calls on a port to it fail with ERR_SERVICE_DOWN, whether
   * it was the current one (new calls then fail too, until the next connect) or one replaced
   * while calls were still on its port.
   */
  'port.down': { args: { target: Target; server: number }; result: null }
  /** Round trip through the worker's event loop: the cheapest proof it is responsive. */
  ping: { args: null; result: null }
}

/** Requests a worker sends to the supervisor. */
export interface SupervisorOps {
  [op: string]: { args: unknown; result: unknown }
  /**
   * Wire a link to `target` (answered after `port.connect`). When it is not up: ERR_SERVICE_DOWN
   * at once, or with `wait`, the answer comes once it is (the caller's deadline bounds the wait).
   */
  'port.request': { args: { target: Target; wait: boolean }; result: null }
  /** An uncaught exception is ending this worker; it waits on its death notice (no answer read). */
  dying: { args: null; result: null }
}
