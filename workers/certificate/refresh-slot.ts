import { monotonicMs } from '../../shared/clock.js'
import { untilAborted } from '../../shared/deadline.js'
import type { Logger } from '../../shared/logger.js'
import { Gauge, type Registry } from '../../shared/prom.js'

/**
 * One refresh at a time, each watched. A file operation that hangs (an fsync on a frozen volume)
 * cannot be called back: its refresh is said to be stuck once it outlasts `stuckAfterMs`, and said
 * again if it ever ends. The next refresh waits for it rather than write beside it (a late rename
 * of the older identity would land over the newer). A caller stops waiting when its signal
 * aborts (a boot's deadline, the shutdown); the work it started stays in the slot.
 */
export interface RefreshSlot {
  run(work: (signal: AbortSignal) => Promise<void>, signal: AbortSignal): Promise<void>
  /** How long the refresh in the slot has run, once it is stuck; 0 otherwise. */
  stuckSeconds(): number
}

interface InSlot {
  since: number
  stuck: boolean
  settled: Promise<void>
}

export function createRefreshSlot(stuckAfterMs: number, log: Logger): RefreshSlot {
  let current: InSlot | undefined
  return {
    async run(work, signal) {
      while (current) await untilAborted(current.settled, signal)
      const entry: InSlot = { since: monotonicMs(), stuck: false, settled: Promise.resolve() }
      const timer = setTimeout(() => {
        entry.stuck = true
        log.error(
          { event: 'certificate.refresh.stuck', afterMs: stuckAfterMs },
          `a refresh has not ended in ${stuckAfterMs}ms (a file operation or the provider hangs); no other starts until it does`,
        )
      }, stuckAfterMs)
      const outcome = work(signal).finally(() => {
        clearTimeout(timer)
        current = undefined
        if (entry.stuck) {
          const tookMs = Math.round(monotonicMs() - entry.since)
          log.warn(
            { event: 'certificate.refresh.unstuck', tookMs },
            `the stuck refresh ended after ${tookMs}ms`,
          )
        }
      })
      entry.settled = outcome.then(
        () => {},
        () => {},
      )
      current = entry
      return untilAborted(outcome, signal)
    },
    stuckSeconds: () => (current?.stuck ? (monotonicMs() - current.since) / 1000 : 0),
  }
}

export function registerStuckGauge(registry: Registry, slot: RefreshSlot): void {
  new Gauge({
    name: 'certificate_refresh_stuck_seconds',
    help: 'How long the refresh in flight has run, once it has outlasted the start deadline (0: none is stuck)',
    registers: [registry],
    collect() {
      this.set(slot.stuckSeconds())
    },
  })
}
