import { NON_HEAP_RSS_MB } from '../container-resources.js'
import { HEAP_SHARE } from '../http/connection-cap.js'
import { SERVICES, type ServiceName } from '../services.js'
import { CSR_POOL_LIMITS, CSR_POOL_THREADS } from './limits.js'
import type { ResourceLimits, ServiceTuning } from './types.js'

const MIB = 2 ** 20

/** A worker's heap limits, old and young generations, in MiB. */
const heapMb = (r: ResourceLimits): number =>
  (r.maxOldGenerationSizeMb ?? 0) + (r.maxYoungGenerationSizeMb ?? 0)

/**
 * What the process may hold, in MiB, before a leak in one worker ends that thread (reason `oom`,
 * DESIGN.md §8): every enabled worker's heap limits, the certificate service's CSR pool, and what
 * the process holds besides (shared/container-resources.ts). Past the container's memory limit,
 * the kernel OOM-kills the whole pod first.
 */
export function processMemoryMb(
  services: Record<ServiceName, Pick<ServiceTuning, 'enabled' | 'resourceLimits'>>,
): number {
  const enabled = SERVICES.filter((name) => services[name].enabled)
  const pool = enabled.includes('certificate') ? CSR_POOL_THREADS * heapMb(CSR_POOL_LIMITS) : 0
  return enabled.reduce((mb, name) => mb + heapMb(services[name].resourceLimits), pool + NON_HEAP_RSS_MB)
}

/*
 * What a token cache holds of the token worker's heap, measured on Node 26 with the local
 * authority's tokens: distinct keys of one type sent to the built CLI until its token thread ended
 * out of heap (48 MiB old generation, recycling off), `cached_token_entries` and
 * `cached_token_bytes` scraped on the way; the heap it held (the limit less the idle heap used)
 * divided by what the cache held. An access token's entry cost 2,679 bytes of heap for 657 bytes
 * counted against TOKEN_CACHE_MAX_BYTES (the token and its key: 4.1 a counted byte), a role
 * token's 2,036 for 453 (4.5): the token is held with its key object, its key's text, its entry,
 * lru-cache's node and its `token_expires_in_seconds` series. lru-cache also sets aside arrays of
 * TOKEN_CACHE_MAX_ENTRIES slots up front: 43 bytes a slot (1,000,000 slots against 100,000, with
 * the rest alike). Longer keys cost more a counted byte (5.4 at 400-character roles: the role is
 * in the key, the token and the series), longer tokens less.
 */
const TOKEN_ENTRY_HEAP_BYTES = 2_700
const TOKEN_HEAP_BYTES_PER_COUNTED_BYTE = 4.5
const TOKEN_SLOT_HEAP_BYTES = 44
/**
 * A fingerprint in the in-memory dedup store (REDIS_URL empty), committed: 214 bytes of heap at
 * 100,000, 226 at 300,000 (its record, its key of 32 hex digits, the Map's slot), measured on
 * Node 26 in a bare isolate, heap used after a full GC before and after.
 */
const DEDUP_ENTRY_HEAP_BYTES = 240

/** Heap used once started, with nothing cached or stored (shared/config/limits.ts). */
export const IDLE_HEAP_MB = { token: 10, gateway: 12 } as const

/**
 * The heap, in MiB, the token caches hold at their bounds: one cache per token type, each at most
 * `maxEntries` tokens and `maxBytes` counted bytes, whichever it reaches first.
 */
export function tokenCachesMb(types: number, maxEntries: number, maxBytes: number): number {
  const one =
    maxEntries * TOKEN_SLOT_HEAP_BYTES +
    Math.min(maxEntries * TOKEN_ENTRY_HEAP_BYTES, maxBytes * TOKEN_HEAP_BYTES_PER_COUNTED_BYTE)
  return (types * one) / MIB
}

/** The heap, in MiB, the in-memory dedup store holds at GATEWAY_DEDUP_MAX_ENTRIES. */
export function dedupStoreMb(maxEntries: number): number {
  return (maxEntries * DEDUP_ENTRY_HEAP_BYTES) / MIB
}

/**
 * The old generation, in MiB, a worker needs to hold `heldMb` at its bounds besides its idle heap:
 * both in what its connections leave of it (they may take HEAP_SHARE, shared/http/connection-cap.ts).
 */
export function heapNeededMb(service: keyof typeof IDLE_HEAP_MB, heldMb: number): number {
  return Math.ceil((IDLE_HEAP_MB[service] + heldMb) / (1 - HEAP_SHARE))
}
