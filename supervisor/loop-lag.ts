import { monitorEventLoopDelay } from 'node:perf_hooks'
import { collectFor, idleCollection } from '../shared/loop-delay.js'
import { Gauge, type Registry } from '../shared/prom.js'
import type { MetricsJson } from '../shared/protocol.js'

/**
 * prom-client's `nodejs_eventloop_lag_*` for the main thread (the same names, helps and
 * aggregators), but a view (the status page, a HEAD of /metrics) reads the delays since the last
 * scrape without starting a new period: prom-client's module resets its histogram at every
 * collection, so a status page left open wiped a stall of the main thread before Prometheus saw
 * it (the workers' own figure, shared/loop-delay.ts, already kept it). Returns the registry's
 * collection, a scrape or a view.
 */
export function registerEventLoopLag(registry: Registry): (view: boolean) => Promise<MetricsJson> {
  const registers = [registry]
  const histogram = monitorEventLoopDelay({ resolution: 10 })
  histogram.enable()
  const period = idleCollection()
  const lag: Gauge = new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds.',
    registers,
    aggregator: 'average',
    // As prom-client: this one collect, registered first so that it runs first, sets every figure;
    // the lag itself is measured now and reported at the next collection.
    collect() {
      const start = process.hrtime.bigint()
      setImmediate(() => lag.set(Number(process.hrtime.bigint() - start) / 1e9))
      min.set(histogram.min / 1e9)
      max.set(histogram.max / 1e9)
      mean.set(histogram.mean / 1e9)
      stddev.set(histogram.stddev / 1e9)
      p50.set(histogram.percentile(50) / 1e9)
      p90.set(histogram.percentile(90) / 1e9)
      p99.set(histogram.percentile(99) / 1e9)
      if (!period.viewing) histogram.reset()
    },
  })
  const gauge = (name: string, help: string, aggregator: 'min' | 'max' | 'average') =>
    new Gauge({ name: `nodejs_eventloop_lag_${name}`, help, registers, aggregator })
  const min = gauge('min_seconds', 'The minimum recorded event loop delay.', 'min')
  const max = gauge('max_seconds', 'The maximum recorded event loop delay.', 'max')
  const mean = gauge('mean_seconds', 'The mean of the recorded event loop delays.', 'average')
  const stddev = gauge(
    'stddev_seconds',
    'The standard deviation of the recorded event loop delays.',
    'average',
  )
  const p50 = gauge('p50_seconds', 'The 50th percentile of the recorded event loop delays.', 'average')
  const p90 = gauge('p90_seconds', 'The 90th percentile of the recorded event loop delays.', 'average')
  const p99 = gauge('p99_seconds', 'The 99th percentile of the recorded event loop delays.', 'average')
  return collectFor(registry, period)
}
