/**
 * One byte budget for every request body a server holds at once, arriving or being worked on
 * (GATEWAY_MAX_BUFFERED_BYTES): per-connection limits alone let many connections together buffer
 * more than the worker's memory. When a body needs room the budget has not got, the largest body
 * still arriving that is larger than it is shed (its client gets 503 and retries): a crowd of
 * large trickling bodies cannot keep a small webhook out, and a body already whole is never cut.
 */
export interface BodyBudget {
  /** Registers a body about to be read; `shed` ends its read when another body needs its room. */
  open(shed: () => void): BodyLease
  used(): number
  readonly limit: number
}

export interface BodyLease {
  /** Takes `n` more bytes; false when there is no room even after shedding larger bodies. */
  grow(n: number): boolean
  /** The body is whole: it can no longer be shed. */
  complete(): void
  /** Gives every byte back (idempotent). */
  release(): void
}

interface Entry {
  bytes: number
  arriving: boolean
  shed(): void
}

/** `limit` 0: no budget (every grow succeeds). */
export function createBodyBudget(limit: number): BodyBudget {
  const entries = new Set<Entry>()
  let used = 0

  const largestArriving = (other: Entry): Entry | undefined => {
    let largest: Entry | undefined
    for (const e of entries) {
      if (e !== other && e.arriving && e.bytes > (largest?.bytes ?? other.bytes)) largest = e
    }
    return largest
  }

  return {
    limit,
    used: () => used,
    open(shed) {
      const entry: Entry = { bytes: 0, arriving: true, shed }
      entries.add(entry)
      // Methods only: a named closure made per request costs a defineProperty in the bundles.
      return {
        grow(n) {
          if (!entries.has(entry)) return false
          while (limit > 0 && used + n > limit) {
            const victim = largestArriving(entry)
            if (!victim) return false
            entries.delete(victim)
            used -= victim.bytes
            victim.bytes = 0
            victim.shed()
          }
          entry.bytes += n
          used += n
          return true
        },
        complete() {
          entry.arriving = false
        },
        release() {
          if (!entries.delete(entry)) return
          used -= entry.bytes
          entry.bytes = 0
        },
      }
    },
  }
}
