import type { ServiceName } from '../services.js'
import type { ResourceLimits } from './types.js'

/**
 * Every worker's heap limits when the config file sets none (DESIGN.md §8): a leak ends that
 * thread only, and `recycleAtPercent` works out of the box. Sized from measurement on Node 26
 * (idle heap used: certificate 12 MiB, token 10, memory-reporter 6, gateway 12, metrics 10,
 * healthcheck 10) with the room each needs under load: the token cache at its bound, the gateway
 * with GATEWAY_MAX_INFLIGHT bodies of GATEWAY_MAX_BODY_BYTES being ingested, a scrape merging
 * every registry. Young generations are kept small: they are reserved memory in every thread.
 */
export const DEFAULT_RESOURCE_LIMITS: Record<ServiceName, ResourceLimits> = {
  certificate: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 },
  token: { maxOldGenerationSizeMb: 128, maxYoungGenerationSizeMb: 16 },
  'memory-reporter': { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 4 },
  gateway: { maxOldGenerationSizeMb: 192, maxYoungGenerationSizeMb: 16 },
  metrics: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 },
  healthcheck: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 4 },
}

/**
 * What the main thread and the process need beyond the workers' heaps: Node and V8 themselves
 * (~45 MiB), and each thread's own native memory (code space, stacks, buffers; ~15 MiB a worker).
 */
export const PROCESS_OVERHEAD_MB = 45 + 6 * 15

/** The container memory limit the defaults add up to (`resources.limits.memory`). */
export const CONTAINER_MEMORY_LIMIT_MB =
  Object.values(DEFAULT_RESOURCE_LIMITS).reduce(
    (sum, l) => sum + (l.maxOldGenerationSizeMb ?? 0) + (l.maxYoungGenerationSizeMb ?? 0),
    0,
  ) + PROCESS_OVERHEAD_MB
