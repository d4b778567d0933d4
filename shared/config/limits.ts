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
