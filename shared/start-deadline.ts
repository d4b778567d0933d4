import { monotonicMs } from './clock.js'
import type { Config } from './config/types.js'

/** What a service's boot work leaves of its start's deadline, for the start to answer before it. */
const START_MARGIN_MS = 2_000

/**
 * When (shared/clock.ts) the work a service's start waits on must end, for the start to answer
 * before the supervisor's `startTimeout` would fail it: a provider that hangs is then answered as
 * such (a kept identity, a token fetch counted failed), never as a start that timed out.
 */
export function bootDeadline(startTimeoutMs: number, now = monotonicMs()): number {
  return now + startTimeoutMs - Math.min(START_MARGIN_MS, startTimeoutMs / 4)
}

/** `signal`, or the time left until `deadline` (an integer, as AbortSignal.timeout needs). */
export function untilDeadline(signal: AbortSignal, deadline: number): AbortSignal {
  return AbortSignal.any([signal, AbortSignal.timeout(Math.max(0, Math.floor(deadline - monotonicMs())))])
}

/**
 * MODE=init's budget: the start deadlines of the two services that would fetch what it does
 * (certificate, then token), together.
 */
export function initBudgetMs(config: Config): number {
  return config.services.certificate.startTimeout + config.services.token.startTimeout
}
