import type * as Prom from 'prom-client'
import CounterClass from 'prom-client/lib/counter.js'
import GaugeClass from 'prom-client/lib/gauge.js'
import HistogramClass from 'prom-client/lib/histogram.js'
import RegistryClass from 'prom-client/lib/registry.js'

/**
 * The metric classes the threads need, without prom-client's index: that also loads the
 * Pushgateway (http, https, tls, zlib), the default process metrics and OpenTelemetry, ~100 ms of
 * module loading per thread at boot, seven threads at once. prom-client has no `exports` map; these
 * files are the classes its index re-exports (pinned to major 15 in package.json; their types are
 * in prom-client-lib.d.ts). Imported, not required, so that each thread's bundle holds them: a
 * `require` at run time resolved, read and wrapped its ten files in every thread.
 */
export const Registry: typeof Prom.Registry = RegistryClass
export const Gauge: typeof Prom.Gauge = GaugeClass
export const Counter: typeof Prom.Counter = CounterClass
export const Histogram: typeof Prom.Histogram = HistogramClass
export type Registry = Prom.Registry
export type Gauge<T extends string = string> = Prom.Gauge<T>
export type Counter<T extends string = string> = Prom.Counter<T>
export type Histogram<T extends string = string> = Prom.Histogram<T>
