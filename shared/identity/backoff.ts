import { setTimeout as sleep } from 'node:timers/promises'

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
