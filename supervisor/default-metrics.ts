import gc from 'prom-client/lib/metrics/gc.js'
import heapSizeAndUsed from 'prom-client/lib/metrics/heapSizeAndUsed.js'
import heapSpacesSizeAndUsed from 'prom-client/lib/metrics/heapSpacesSizeAndUsed.js'
import osMemoryHeap from 'prom-client/lib/metrics/osMemoryHeap.js'
import processHandles from 'prom-client/lib/metrics/processHandles.js'
import processMaxFileDescriptors from 'prom-client/lib/metrics/processMaxFileDescriptors.js'
import processOpenFileDescriptors from 'prom-client/lib/metrics/processOpenFileDescriptors.js'
import processRequests from 'prom-client/lib/metrics/processRequests.js'
import processResources from 'prom-client/lib/metrics/processResources.js'
import processStartTime from 'prom-client/lib/metrics/processStartTime.js'
import version from 'prom-client/lib/metrics/version.js'
import type { Collect } from '../shared/loop-delay.js'
import { Counter, type Registry } from '../shared/prom.js'
import { registerEventLoopLag } from './loop-lag.js'

/**
 * prom-client's default metrics (`process_*`, `nodejs_*`), registered module by module as its
 * `collectDefaultMetrics` does, but for `process_cpu_*`: that module loads @opentelemetry/api
 * (51 modules, ~13 ms and 1.3 MiB of heap in the main thread at boot) for exemplars, which are
 * not used here. Its three counters are made below, the same way; the event-loop lag is
 * loop-lag.ts's. The file names are prom-client 15's (pinned in package.json), as in
 * shared/prom.ts; imported, so the supervisor's bundle holds them.
 */
const MODULES = [
  processStartTime,
  osMemoryHeap,
  processOpenFileDescriptors,
  processMaxFileDescriptors,
  processResources,
  processHandles,
  processRequests,
  heapSizeAndUsed,
  heapSpacesSizeAndUsed,
  version,
  gc,
]

/** Returns the registry's collection: a scrape, or a view that leaves the lag's period to the next scrape. */
export function collectDefaultMetrics(registry: Registry): Collect {
  for (const register of MODULES) register(registry)
  processCpu(registry)
  return registerEventLoopLag(registry)
}

/** `process_cpu_user_seconds_total`, `…_system_…` and `process_cpu_seconds_total`, set at each scrape. */
function processCpu(registry: Registry): void {
  const registers = [registry]
  let last = process.cpuUsage()
  const user: Counter = new Counter({
    name: 'process_cpu_user_seconds_total',
    help: 'Total user CPU time spent in seconds.',
    registers,
    collect() {
      const now = process.cpuUsage()
      const u = (now.user - last.user) / 1e6
      const s = (now.system - last.system) / 1e6
      last = now
      user.inc(u)
      system.inc(s)
      total.inc(u + s)
    },
  })
  const system = new Counter({
    name: 'process_cpu_system_seconds_total',
    help: 'Total system CPU time spent in seconds.',
    registers,
  })
  const total = new Counter({
    name: 'process_cpu_seconds_total',
    help: 'Total user and system CPU time spent in seconds.',
    registers,
  })
}
