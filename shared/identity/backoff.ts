import { setTimeout as sleep } from 'node:timers/promises'
import { monotonicMs } from '../clock.js'
import { codedError } from '../errors.js'

/** SIA's retry schedule: `initialMs`, doubling, capped at `maxMs`; jitter only shortens a wait. */
export function backoffDelay(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random = Math.random,
): number {
  const base = Math.min(initialMs * 2 ** attempt, maxMs)
  return Math.round(base * (0.75 + 0.25 * random()))
}

/**
 * A failed refresh's wait: `backoff`, never so long that the certificate served ends first (half
 * of `leftMs`, what is left of it, at least `floorMs`), and at most `afterEndMs` once it has ended.
 * The back-off alone grows to a quarter of REFRESH_INTERVAL (6 h by default): it waited past a
 * short certificate's end with the provider back, and hours apart with it expired.
 */
export function capToEnd(backoff: number, leftMs: number, floorMs: number, afterEndMs: number): number {
  return Math.min(backoff, leftMs > 0 ? Math.max(floorMs, leftMs / 2) : afterEndMs)
}

/** Sleeps `ms` unless `signal` aborts first; true if it slept the whole time. */
export async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal })
    return true
  } catch {
    return false
  }
}

/** SIA's first wait at boot; each next one is twice as long. */
const BOOT_INITIAL_MS = 5_000
/** The longest wait between tries at boot. */
const BOOT_MAX_MS = 60_000
/** The least time worth a try. */
const MIN_TRY_MS = 1_000

export interface BootRetry {
  /** When (shared/clock.ts) every try must have ended: one still going then fails ERR_PROVIDER_TIMEOUT. */
  ends: number
  /** REFRESH_INTERVAL: a quarter of it caps the waits, when shorter than a minute (5 s at least). */
  refreshInterval: number
  /** At most this many tries (by default, as many as there is time for). */
  tries?: number
  /** Whether a failure is worth another try (by default, every one is). */
  retryable?: (err: unknown) => boolean
  /** Said before each wait (`attempt` counts from 1). */
  onRetry(err: unknown, attempt: number, waitMs: number): void
}

/**
 * `work` on SIA's schedule at boot (5 s, doubling, capped at a minute; SIA's init retries the same
 * way) until it succeeds: each try and all of them within `ends`, another only with time left for
 * it (its wait and a second) and never once `signal` aborts. Throws the last failure.
 */
export async function retryAtBoot<T>(
  work: (signal: AbortSignal) => Promise<T>,
  signal: AbortSignal,
  opts: BootRetry,
): Promise<T> {
  // Whatever REFRESH_INTERVAL (0, or so short that a quarter of it would have every try make a new
  // key at once).
  const quarter = opts.refreshInterval > 0 ? Math.floor(opts.refreshInterval / 4) : BOOT_MAX_MS
  const maxMs = Math.max(BOOT_INITIAL_MS, Math.min(quarter, BOOT_MAX_MS))
  for (let attempt = 0; ; attempt++) {
    const left = Math.max(0, Math.floor(opts.ends - monotonicMs()))
    const expired = AbortSignal.timeout(left)
    try {
      return await work(AbortSignal.any([signal, expired]))
    } catch (caught) {
      const err =
        !signal.aborted && expired.aborted
          ? codedError('ERR_PROVIDER_TIMEOUT', `the provider issued nothing within ${left}ms`, caught)
          : caught
      const wait = backoffDelay(attempt, BOOT_INITIAL_MS, maxMs)
      if (
        signal.aborted ||
        attempt + 1 >= (opts.tries ?? Number.POSITIVE_INFINITY) ||
        !(opts.retryable?.(err) ?? true) ||
        monotonicMs() + wait + MIN_TRY_MS >= opts.ends
      )
        throw err
      opts.onRetry(err, attempt + 1, wait)
      if (!(await pause(wait, signal))) throw err
    }
  }
}
