import { monotonicMs } from './clock.js'
import type { Config } from './config/types.js'
import { SERVICES, type ServiceName } from './services.js'
import { HEARTBEAT_MS, hasLiveThread, type ServiceState, type StatusBoard } from './status-board.js'

/** What the status board says about the process; read lock-free on every probe. */
export interface Readiness {
  ready: boolean
  phase: string
  /**
   * `degraded`: a running service that can accept nothing, and why (e.g. "redis", "redis,sink");
   * `stale`: a running service whose loop is blocked (no heartbeat: liveness names it too).
   */
  notReady: { service: ServiceName; state: ServiceState; degraded?: string; stale?: true }[]
}

export function readiness(board: StatusBoard, config: Config, now = monotonicMs()): Readiness {
  const phase = board.phase()
  const notReady: Readiness['notReady'] = []
  for (const service of SERVICES) {
    if (!config.services[service].enabled) continue
    const state = board.state(service)
    if (state !== 'running') notReady.push({ service, state })
    // A blocked loop answers nothing until its watchdog ends it (10 s by default, and again at
    // each restart if it blocks every time): readiness said 200 while liveness said stale.
    else if (stale(board, config, service, now)) notReady.push({ service, state, stale: true })
    else {
      const degraded = board.degraded(service)
      if (degraded.length > 0) notReady.push({ service, state, degraded: degraded.join(',') })
    }
  }
  return { ready: phase === 'running' && notReady.length === 0, phase, notReady }
}

export interface Liveness {
  alive: boolean
  stale: string[]
}

/**
 * Three missed heartbeats make a heartbeat stale. Liveness reports a stuck worker well before
 * its watchdog (watchdogTimeout) restarts it, and recovers once it has: the kubelet's
 * failureThreshold only kills the pod if the supervisor cannot heal the worker itself.
 */
const STALE_AFTER_MS = 3 * HEARTBEAT_MS

/** Whether a worker's heartbeat is stale (three beats, or its watchdog's timeout if shorter). */
function stale(board: StatusBoard, config: Config, s: ServiceName, now: number): boolean {
  return now - board.lastBeat(s) > Math.min(STALE_AFTER_MS, config.services[s].watchdogTimeout)
}

/** Alive while the supervisor beats and every running worker's heartbeat is fresh. */
export function liveness(board: StatusBoard, config: Config, now = monotonicMs()): Liveness {
  const names: string[] = []
  if (now - board.lastBeat('supervisor') > STALE_AFTER_MS) names.push('supervisor')
  for (const s of SERVICES) {
    if (!config.services[s].enabled || board.state(s) !== 'running') continue
    if (stale(board, config, s, now)) names.push(s)
  }
  return { alive: names.length === 0, stale: names }
}

/** A worker's heap and event-loop figures, as /metrics and the status page show them. */
export interface WorkerVitals {
  /** Undefined while its loop is blocked: the last figure was measured before the block. */
  heapUsedBytes?: number
  heapLimitBytes: number
  eventLoopUtilization: number
}

/**
 * A worker's vitals from its row of the board, or undefined with no thread (down, stopped: the row
 * holds its last one's). A running worker whose heartbeat is stale has not turned its loop since
 * its last beat: its loop is busy (1) and its heap not known. Its last beat's figures read as live
 * (an idle loop's 0.001) for the whole block, beside sia_worker_up 0 and a stale liveness.
 */
export function workerVitals(
  board: StatusBoard,
  config: Config,
  s: ServiceName,
  now = monotonicMs(),
): WorkerVitals | undefined {
  const sample = board.sample(s)
  if (!hasLiveThread(sample.state)) return undefined
  if (sample.state === 'running' && stale(board, config, s, now)) {
    return { heapLimitBytes: sample.heapLimitBytes, eventLoopUtilization: 1 }
  }
  const { heapUsedBytes, heapLimitBytes, eventLoopUtilization } = sample
  return { heapUsedBytes, heapLimitBytes, eventLoopUtilization }
}
