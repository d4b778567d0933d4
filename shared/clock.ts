import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Milliseconds on the process's monotonic clock (CLOCK_MONOTONIC, through `process.hrtime`): the
 * same in every thread of the process, and never stepped, where the wall clock (`Date.now()`) moves
 * with an NTP step or a VM's resume. Heartbeats, watchdogs, deadlines and the shutdown budget are
 * measured on it: a step of the wall clock must not read as a worker gone silent, nor eat the
 * budget. Only for differences; a time shown to people stays `Date.now()`.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6
}

/** How far the wall clock may move apart from the monotonic clock before a wait planned on it is re-planned. */
const WALL_STEP_MS = 5_000
/** The longest a wait planned on the wall clock sleeps before it looks for a step. */
const WALL_SLICE_MS = 10_000

/**
 * Waits `ms` that were planned on the wall clock (a certificate's validity) on the monotonic
 * timer, in slices: a wait computed once and slept whole did not see an NTP step or a VM's resume,
 * and served a certificate expired, or not yet valid, for hours. 'stepped' as soon as a slice finds
 * the wall clock moved more than WALL_STEP_MS apart from the monotonic clock (the caller plans
 * again), 'aborted' when `signal` aborts, else 'slept'.
 */
export async function pauseOnWall(ms: number, signal: AbortSignal): Promise<'slept' | 'stepped' | 'aborted'> {
  const wall0 = Date.now()
  const mono0 = monotonicMs()
  for (;;) {
    const left = ms - (monotonicMs() - mono0)
    if (left <= 0) return 'slept'
    try {
      await sleep(Math.min(left, WALL_SLICE_MS), undefined, { signal })
    } catch {
      return 'aborted'
    }
    if (Math.abs(Date.now() - wall0 - (monotonicMs() - mono0)) > WALL_STEP_MS) return 'stepped'
  }
}
