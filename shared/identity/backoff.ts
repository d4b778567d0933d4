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

/** Sleeps `ms` unless `signal` aborts first; true if it slept the whole time. */
export async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal })
    return true
  } catch {
    return false
  }
}
