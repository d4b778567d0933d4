import { setTimeout as sleep } from 'node:timers/promises'
import { monotonicMs } from './clock.js'
import { untilAborted } from './deadline.js'
import type { Logger } from './logger.js'
import { Gauge, type Registry } from './prom.js'

/**
 * One piece of work at a time, each watched: a certificate refresh, a write of the token files. A
 * file operation that hangs (an fsync on a frozen volume) cannot be called back: its work is said
 * to be stuck once it outlasts `stuckAfterMs`, and said again if it ever ends. The next waits for
 * it rather than write beside it (a late rename of the older file would land over the newer). A
 * caller stops waiting when its signal aborts (a boot's deadline, the shutdown); the work it
 * started stays in the slot: a shutdown waits for it (`idle`), or the thread was ended between
 * the renames of a key and its certificate, leaving a key beside another key's certificate.
 */
export interface WatchedSlot {
  run(work: (signal: AbortSignal) => Promise<void>, signal: AbortSignal): Promise<void>
  /** Whether work is in the slot (a caller that would rather skip than wait asks). */
  busy(): boolean
  /** Resolves once no work is in the slot, or at `deadline` (monotonic ms): whether it is empty. */
  idle(deadline: number): Promise<boolean>
  /** How long the work in the slot has run, once it is stuck; 0 otherwise. */
  stuckSeconds(): number
}

export interface SlotOptions {
  stuckAfterMs: number
  log: Logger
  /** `<what>.stuck` and `<what>.unstuck` are logged: `certificate.refresh`, `token.files`. */
  event: string
  /** What the work is, in the messages: "a refresh", "a write of the token files". */
  what: string
  /** A gauge of how long the slot's work has run once stuck (0: none is), for an alert to fire on. */
  gauge: { registry: Registry; name: string; help: string }
}

interface InSlot {
  since: number
  stuck: boolean
  settled: Promise<void>
}

export function createWatchedSlot({ stuckAfterMs, log, event, what, gauge }: SlotOptions): WatchedSlot {
  let current: InSlot | undefined
  const stuckSeconds = () => (current?.stuck ? (monotonicMs() - current.since) / 1000 : 0)
  new Gauge({
    name: gauge.name,
    help: gauge.help,
    registers: [gauge.registry],
    collect() {
      this.set(stuckSeconds())
    },
  })
  return {
    async run(work, signal) {
      while (current) await untilAborted(current.settled, signal)
      const entry: InSlot = { since: monotonicMs(), stuck: false, settled: Promise.resolve() }
      const timer = setTimeout(() => {
        entry.stuck = true
        log.error(
          { event: `${event}.stuck`, afterMs: stuckAfterMs },
          `${what} has not ended in ${stuckAfterMs}ms (a file operation or the provider hangs); no other starts until it does`,
        )
      }, stuckAfterMs)
      let started: Promise<void>
      try {
        started = work(signal)
      } catch (err) {
        started = Promise.reject(err) // thrown before its first await: settled as any failure
      }
      const outcome = started.finally(() => {
        clearTimeout(timer)
        current = undefined
        if (entry.stuck) {
          const tookMs = Math.round(monotonicMs() - entry.since)
          log.warn(
            { event: `${event}.unstuck`, tookMs },
            `the stuck ${what.replace(/^an? /, '')} ended after ${tookMs}ms`,
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
    busy: () => current !== undefined,
    async idle(deadline) {
      while (current) {
        const left = deadline - monotonicMs()
        if (left <= 0) return false
        await Promise.race([current.settled, sleep(left, undefined, { ref: false })])
      }
      return true
    },
    stuckSeconds,
  }
}
