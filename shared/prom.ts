import { createRequire } from 'node:module'
import type * as Prom from 'prom-client'

/**
 * The metric classes the threads need, without prom-client's index: that also loads the
 * Pushgateway (http, https, tls, zlib), the default process metrics and OpenTelemetry, ~100 ms of
 * module loading per thread at boot, seven threads at once. prom-client has no `exports` map; these files are
 * the classes its index re-exports (pinned to major 15 in package.json).
 */
const require = createRequire(import.meta.url)

export const Registry: typeof Prom.Registry = require('prom-client/lib/registry')
export const Gauge: typeof Prom.Gauge = require('prom-client/lib/gauge')
export const Counter: typeof Prom.Counter = require('prom-client/lib/counter')
export const Histogram: typeof Prom.Histogram = require('prom-client/lib/histogram')
export const AggregatorRegistry: typeof Prom.AggregatorRegistry = require('prom-client/lib/cluster')
export type Registry = Prom.Registry
export type Gauge<T extends string = string> = Prom.Gauge<T>
export type Counter<T extends string = string> = Prom.Counter<T>
export type Histogram<T extends string = string> = Prom.Histogram<T>
