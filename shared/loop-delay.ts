import { monitorEventLoopDelay } from 'node:perf_hooks'
import { monotonicMs } from './clock.js'
import { Gauge, type Registry } from './prom.js'
import type { MetricsJson } from './protocol.js'

/**
 * `sia_worker_event_loop_delay_max_seconds` in `registry`: the longest the loop was held since the
 * previous Prometheus scrape (as prom-client's nodejs_eventloop_lag_max_seconds): how long a
 * request could wait behind one piece of work. Returns the registry's collection: a scrape starts
 * a new period, a view (the status page) reads the maximum so far and leaves it for the scrape.
 * `period`: where the collection under way is told to the registry's other metrics.
 */
export function registerLoopDelay(registry: Registry, period: Collection = idleCollection()): Collect {
  const monitor = monitorEventLoopDelay({ resolution: 20 })
  monitor.enable()
  let longestSec = 0
  new Gauge({
    name: 'sia_worker_event_loop_delay_max_seconds',
    help: 'Longest event-loop delay of the worker since the previous scrape',
    registers: [registry],
    collect() {
      if (monitor.count > 0) longestSec = Math.max(longestSec, monitor.max / 1e9)
      monitor.reset()
      this.set(longestSec)
      if (!period.viewing) longestSec = 0
    },
  })
  return collectFor(registry, period)
}

/**
 * A registry's collection: a scrape, or a view that starts no new period. `answerBy`
 * (shared/clock.ts): a scrape answered past it was given up on by the metrics service (this
 * thread's loop was blocked longer than METRICS_SCRAPE_TIMEOUT): it is a view, or the block it
 * could not see was reset by an answer nobody read, and the next scrape reported nothing.
 */
export type Collect = (view: boolean, answerBy?: number) => Promise<MetricsJson>

/**
 * The collection under way, as a metric's collect() reads it: prom-client calls every collect() in
 * the same turn as getMetricsAsJSON() is called, and this is set for that turn only.
 */
export interface Collection {
  /** A view's: a metric leaves its period (since the last scrape) to the next scrape. */
  viewing: boolean
  /**
   * When the answer is due (shared/clock.ts; infinite: no deadline): a collect() that waits (a
   * file's read) stops waiting in time for the answer to arrive by then.
   */
  answerBy: number
}

/** A collection's state between collections. */
export function idleCollection(): Collection {
  return { viewing: false, answerBy: Number.POSITIVE_INFINITY }
}

/** The registry's collection, told to its metrics' collect() through `period`. */
export function collectFor(registry: Registry, period: Collection): Collect {
  return (view, answerBy = Number.POSITIVE_INFINITY) => {
    period.viewing = view || monotonicMs() > answerBy
    period.answerBy = answerBy
    try {
      return registry.getMetricsAsJSON() as Promise<MetricsJson>
    } finally {
      Object.assign(period, idleCollection())
    }
  }
}
