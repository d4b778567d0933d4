// Types for the prom-client files imported one by one (shared/prom.ts, supervisor/default-metrics.ts):
// the package (pinned to major 15) declares its index only. Each file's `module.exports` is what
// its index re-exports under that name.
declare module 'prom-client/lib/registry.js' {
  const Registry: typeof import('prom-client').Registry
  export default Registry
}
declare module 'prom-client/lib/gauge.js' {
  const Gauge: typeof import('prom-client').Gauge
  export default Gauge
}
declare module 'prom-client/lib/counter.js' {
  const Counter: typeof import('prom-client').Counter
  export default Counter
}
declare module 'prom-client/lib/histogram.js' {
  const Histogram: typeof import('prom-client').Histogram
  export default Histogram
}
declare module 'prom-client/lib/cluster.js' {
  const AggregatorRegistry: typeof import('prom-client').AggregatorRegistry
  export default AggregatorRegistry
}
declare module 'prom-client/lib/metrics/*.js' {
  const register: (registry: import('prom-client').Registry, config?: { prefix?: string }) => void
  export default register
}
