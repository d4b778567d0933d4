import type { ServiceTuning } from '../shared/config/types.js'
import type { WorkerExit } from './worker-handle.js'

const BACKOFF_BASE_MS = 100
const BACKOFF_CAP_MS = 15_000

export type RestartDecision =
  | { action: 'restart'; attempt: number; delayMs: number }
  | { action: 'stay-down' }
  | { action: 'escalate' }

/**
 * OTP-style intensity with PM2-style back-off. `history` holds the times of earlier restarts that
 * count toward intensity (recycling does not: it is planned, not a fault).
 */
export function decideRestart(
  tuning: ServiceTuning,
  exit: WorkerExit,
  history: readonly number[],
  now: number,
  random: () => number = Math.random,
): RestartDecision {
  if (exit.reason === 'recycled') return { action: 'restart', attempt: 1, delayMs: 0 }
  if (tuning.restart === 'temporary') return { action: 'stay-down' }
  if (tuning.restart === 'transient' && exit.reason === 'exit' && exit.exitCode === 0)
    return { action: 'stay-down' }
  const recent = history.filter((t) => now - t < tuning.restartWindow).length
  if (recent >= tuning.maxRestarts) return { action: 'escalate' }
  const attempt = recent + 1 // a worker that stayed up a whole window starts again at attempt 1
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1))
  return { action: 'restart', attempt, delayMs: Math.round(ceiling * (0.5 + random() / 2)) }
}
