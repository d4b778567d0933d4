import type { ServiceTuning } from '../shared/config/types.js'
import type { WorkerExit } from './worker-handle.js'

export type RestartDecision =
  | { action: 'restart'; attempt: number; delayMs: number }
  | { action: 'stay-down' }
  | { action: 'escalate' }

export type RestartTuning = Pick<
  ServiceTuning,
  'restart' | 'maxRestarts' | 'restartWindow' | 'restartBackoff' | 'restartBackoffMax'
>

/**
 * What to do when a running worker has ended on its own: OTP-style intensity (at most
 * `maxRestarts` within `restartWindow`, then escalate) with PM2-style exponential back-off and
 * jitter. `history` holds the times of earlier faults that count toward intensity (recycling is
 * planned, not a fault: it replaces a running worker and never comes here). The attempt number is the count of faults
 * within the window, so the back-off starts over once the worker has stayed up a whole window.
 * The first fault in a window restarts at once, as OTP does (the dead worker's port is held
 * meanwhile); back-off begins with the second.
 */
export function decideRestart(
  tuning: RestartTuning,
  exit: WorkerExit,
  history: readonly number[],
  now: number,
  random: () => number = Math.random,
): RestartDecision {
  if (tuning.restart === 'temporary') return { action: 'stay-down' }
  if (tuning.restart === 'transient' && exit.reason === 'exit' && exit.exitCode === 0)
    return { action: 'stay-down' }
  const recent = history.filter((t) => now - t < tuning.restartWindow).length
  if (recent >= tuning.maxRestarts) return { action: 'escalate' }
  const attempt = recent + 1
  if (attempt === 1) return { action: 'restart', attempt, delayMs: 0 }
  const ceiling = Math.min(tuning.restartBackoffMax, tuning.restartBackoff * 2 ** (attempt - 2))
  // Full delay at most, half at least: workers crashing together do not restart in lockstep.
  return { action: 'restart', attempt, delayMs: Math.round(ceiling * (0.5 + random() / 2)) }
}
