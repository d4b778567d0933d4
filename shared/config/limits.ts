import { readFileSync } from '../builtins.js'
import type { ServiceName } from '../services.js'
import type { ResourceLimits } from './types.js'

/**
 * Every worker's heap limits when the config file sets none (DESIGN.md §8): a leak ends that
 * thread only, and `recycleAtPercent` works out of the box. Sized from measurement on Node 26
 * (idle heap used: certificate 12 MiB, token 10, memory-reporter 6, gateway 12, metrics 10,
 * healthcheck 10) with the room each needs under load: the token cache at its bound, the gateway
 * with GATEWAY_MAX_INFLIGHT bodies of GATEWAY_MAX_BODY_BYTES being ingested, a scrape merging
 * every registry. Young generations are memory every thread touches: the two hot paths (token,
 * gateway) keep 16 MiB, since a smaller one costs them throughput in `npm run bench`; the four
 * others get 1 MiB, which saves ~7 MiB of idle RSS in all (190 -> 183 MiB on Node 26), and
 * certificate and metrics at 1 MiB instead of 2 another ~1.5 MiB (a 10k-series scrape's median
 * unchanged, its p90 ~10% slower; certificate work is OpenSSL's since session 14).
 */
export const DEFAULT_RESOURCE_LIMITS: Record<ServiceName, ResourceLimits> = {
  certificate: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 1 },
  token: { maxOldGenerationSizeMb: 128, maxYoungGenerationSizeMb: 16 },
  'memory-reporter': { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 1 },
  gateway: { maxOldGenerationSizeMb: 192, maxYoungGenerationSizeMb: 16 },
  metrics: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 1 },
  healthcheck: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 1 },
}

/**
 * The certificate service's CSR pool (shared/identity/csr-pool.ts): at most two threads, each
 * with heap limits of its own (a thread a worker starts does not inherit the worker's). One
 * builds or signs one certificate at a time: 12 MiB of heap used at most over a hundred role
 * certificates, forge included (measured on Node 26).
 */
export const CSR_POOL_THREADS = 2
export const CSR_POOL_LIMITS: ResourceLimits = { maxOldGenerationSizeMb: 24, maxYoungGenerationSizeMb: 1 }

/** The most connections a server holds at once by default, whatever the open-file limit. */
const MAX_CONNECTIONS_CAP = 4096

/**
 * HTTP_MAX_CONNECTIONS's default: an eighth of the process's open-file limit (`Max open files`
 * in /proc/self/limits, the soft one), at most 4096. Every thread shares the process's
 * descriptors: a flood of connections to one port (a slowloris holds each until
 * HTTP_HEADER_TIMEOUT) would otherwise take them all, and the health probes, the scrape, the
 * files and Redis would fail with EMFILE. The four servers together hold at most half.
 */
export function defaultMaxConnections(limits = readLimits()): number {
  const soft = /^Max open files\s+(\d+|unlimited)/m.exec(limits)?.[1]
  if (soft === undefined || soft === 'unlimited') return MAX_CONNECTIONS_CAP
  return Math.max(1, Math.min(MAX_CONNECTIONS_CAP, Math.floor(Number(soft) / 8)))
}

function readLimits(): string {
  try {
    return readFileSync('/proc/self/limits', 'utf8')
  } catch {
    return ''
  }
}
