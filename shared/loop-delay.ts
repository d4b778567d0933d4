import { monitorEventLoopDelay } from 'node:perf_hooks'
import { monotonicMs } from './clock.js'
import { Gauge, type Registry } from './prom.js'
import type { MetricsJson } from './protocol.js'

/**
 * `sia_worker_event_loop_delay_max_seconds` in `registry`: the longest the loop was held since the
 * previous Prometheus scrape (as prom-client's nodejs_eventloop_lag_max_seconds): how long a
 * request could wait behind one piece of work. Returns the registry's collection: a scrape starts
 * a new period, a view (the status page) reads the maximum so far and leaves it for the scrape.
 */
export function registerLoopDelay(registry: Registry): Collect {
  const monitor = monitorEventLoopDelay({ resolution: 20 })
  monitor.enable()
  let longestSec = 0
  const period = { viewing: false }
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
 * The registry's collection, `period.viewing` true for a view's: what its metrics' collect() read
 * to leave a period (since the last scrape) to the next scrape. prom-client calls every collect()
 * in the same turn as getMetricsAsJSON() is called.
 */
export function collectFor(registry: Registry, period: { viewing: boolean }): Collect {
  return (view, answerBy = Number.POSITIVE_INFINITY) => {
    period.viewing = view || monotonicMs() > answerBy
    try {
      return registry.getMetricsAsJSON() as Promise<MetricsJson>
    } finally {
      period.viewing = false
    }
  }
}
