import { formatDuration, MAX_DURATION_MS } from '../duration.js'

/** One setting's part in a deadline: its name as the operator wrote it (or as its default's), its value. */
export interface Term {
  setting: string
  ms: number
  given: boolean
}

/**
 * A deadline the sidecar makes by adding settings, each within what a timer can hold
 * (parseDuration): their sum may not be, and Node fires a timer set past 2^31-1 ms after 1 ms
 * (MODE=init with START_TIMEOUT=300h failed at once). `pastMs`: what the code adds of its own.
 */
export interface DerivedDeadline {
  what: string
  terms: Term[]
  pastMs?: number
}

/**
 * What the supervisor gives threads past the shutdown budget to end (DESIGN.md §1): a thread's
 * stop waits for its deadline plus supervisor/slot-machine.ts's TERMINATE_MS, the budget's own
 * watchdog for the budget plus less than that.
 */
export const PAST_BUDGET_MS = 1000

/**
 * The first deadline that no timer can hold, as the setting to name (the last one the operator
 * gave: each was valid alone) and why; undefined when every one fits.
 */
export function deadlineTooLong(
  deadlines: readonly DerivedDeadline[],
): { setting: string; reason: string } | undefined {
  for (const { what, terms, pastMs = 0 } of deadlines) {
    const ms = terms.reduce((sum, t) => sum + t.ms, pastMs)
    if (ms <= MAX_DURATION_MS) continue
    const blamed = terms.findLast((t) => t.given) ?? terms[terms.length - 1]!
    const parts = terms.map((t) => `${t.setting} ${formatDuration(t.ms)}`)
    if (pastMs) parts.push(formatDuration(pastMs))
    return {
      setting: blamed.setting,
      reason: `${what} (${parts.join(' + ')}) is longer than a timer can hold (at most ${formatDuration(MAX_DURATION_MS)})`,
    }
  }
  return undefined
}
