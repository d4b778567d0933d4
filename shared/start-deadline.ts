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
 * The certificate service's start deadline: its start timeout (`services.certificate.startTimeout`,
 * else START_TIMEOUT) for its boot fetch, after the pause of up to DELAY_JITTER_SECONDS it may
 * make first. Added whichever gave the timeout: an explicit one that left the pause out failed the
 * start at random (a 5 s start, a pause of up to 600 s).
 */
export function certificateStartMs(startTimeoutMs: number, delayJitterSeconds: number): number {
  return startTimeoutMs + delayJitterSeconds * 1000
}

/** What the certificate service's start gives its boot fetch: its deadline less the jitter pause. */
export function certificateFetchMs(config: Config): number {
  return config.services.certificate.startTimeout - config.delayJitterSeconds * 1000
}

/**
 * MODE=init's budget: the time the two services that would fetch what it does (certificate, then
 * token) give their fetches, together. The init makes no jitter pause, so none is in its budget.
 */
export function initBudgetMs(config: Config): number {
  return certificateFetchMs(config) + config.services.token.startTimeout
}
