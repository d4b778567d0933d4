import { LRUCache } from 'lru-cache'
import { monotonicMs } from '../../shared/clock.js'
import { untilAborted } from '../../shared/deadline.js'
import { codedError } from '../../shared/errors.js'
import { eachSliced } from '../../shared/slices.js'
import { aborted } from '../../shared/timer-task.js'

/**
 * The token cache of the Go original, keyed by (domain, role, proxy principal, min/max expiry),
 * with bounds: any local client can name keys, so at most `maxEntries` tokens and `maxBytes`
 * bytes are kept, the least recently used evicted first (`lru-cache`). Concurrent misses for one
 * key share one upstream fetch (lru-cache's `fetchMethod`); an entry with less than a minute left
 * is a miss (its TTL in the cache ends there). The configured targets live in a cache of their
 * own, never evicted by other keys. A refresh re-fetches only what is worth it: the targets, and
 * the keys used since the previous refresh whose token is older than `olderThan`; it runs a few
 * fetches at a time, in slices that leave the loop free (a local signature is synchronous).
 * While a token is re-fetched, the cached one keeps being served.
 */
export const MIN_REMAINING_MS = 60_000
/** Refresh fetches in flight at once: ZTS round trips overlap, no burst of thousands at once. */
const REFRESH_LANES = 8

export interface CacheKey {
  domain: string
  role: string
  proxyForPrincipal: string
  minExpiry: number
  maxExpiry: number
}

export interface CacheEntry<V> {
  key: CacheKey
  value: V
  /** Epoch ms. */
  expiresAt: number
  fetchedAt: number
  lastUsed: number
  /** The token's bytes. */
  bytes: number
  /**
   * Fetched with under a minute left (a client asked for a 30 s token): handed to the callers of
   * its fetch, never served from the cache, counted or exported.
   */
  passing: boolean
}

export interface RefreshTally {
  updated: number
  failed: number
  /** Cached, but not worth re-fetching now (unused since the last refresh, or fetched lately). */
  skipped: number
}

export interface TokenCache<V> {
  /** A fresh cached token, or undefined: the synchronous path of every cache hit. */
  peek(key: CacheKey): V | undefined
  /**
   * A fresh cached token, or one fetched now (shared with concurrent callers of the same key). A
   * caller stops waiting when its `signal` aborts; the fetch is aborted once every caller waiting
   * for it has stopped (a refresh that shares it then fails for that key, and tries again).
   */
  get(key: CacheKey, signal?: AbortSignal): Promise<V>
  /**
   * Re-fetches the targets and the keys used since `usedSince` whose token was fetched before
   * `fetchedBefore`; a failure keeps the old token while it is still valid. Starts nothing more
   * once `signal` aborts, and then returns without waiting for the fetches already made.
   */
  refresh(opts: {
    usedSince: number
    fetchedBefore: number
    signal?: AbortSignal
    /** Each fetch that failed, with why. */
    onError?: (key: CacheKey, err: unknown) => void
  }): Promise<RefreshTally>
  /** Drops entries unused for `idleMs` (never a target); returns how many. */
  evictIdle(now: number): number
  entries(): Iterable<CacheEntry<V>>
  /** Entries and token bytes held (targets included). */
  stats(): { entries: number; bytes: number }
  /** Drops every token, targets included; a fetch in flight still answers its callers, uncached. */
  clear(): void
}

export interface TokenCacheOptions<V> {
  fetch(key: CacheKey, signal: AbortSignal): Promise<V>
  /** Epoch ms at which `value` expires. */
  expiresAt(value: V): number
  size(value: V): number
  /** 0: never evict for idleness. */
  idleMs: number
  maxEntries: number
  maxBytes: number
  /** TARGET_DOMAIN_ROLES: always refreshed, never evicted. */
  targets?: readonly CacheKey[]
  /** Aborts every fetch: the service has stopped (not when shutdown begins: misses complete). */
  signal?: AbortSignal
  /** The wall clock, which tokens' expiry is told in (Date.now). */
  now?: () => number
  /** The monotonic clock a cached token's time left is counted on (shared/clock.ts). */
  clock?: () => number
}

/** The original's cache key text, `{domain:role.role,proxy,min,max}`: safe to log. */
export function describeKey(k: CacheKey): string {
  return `{${k.domain}:role.${k.role},${k.proxyForPrincipal},${k.minExpiry},${k.maxExpiry}}`
}

/** A fetch `get` started, and how many callers wait for it. */
interface Miss<V> {
  waiters: number
  abandon: AbortController
  entry: Promise<CacheEntry<V> | undefined>
  /** Settles (never rejects) with the fetch. */
  settled: Promise<unknown>
}

interface FetchContext {
  key: CacheKey
  signal?: AbortSignal
}

type Lru<V> = LRUCache<string, CacheEntry<V>, FetchContext>

export function createTokenCache<V>(opts: TokenCacheOptions<V>): TokenCache<V> {
  const now = opts.now ?? Date.now
  const clock = opts.clock ?? monotonicMs
  const stopped = opts.signal ?? new AbortController().signal
  // Every entry held, targets included, as lru-cache reports them (its own iterators skip the
  // entries being re-fetched): counts and metrics at no cost, never a gap during a refresh.
  const held = new Map<string, CacheEntry<V>>()
  let heldBytes = 0
  const isEntry = (v: unknown): v is CacheEntry<V> => !(v instanceof Promise) && v !== undefined

  const make = (max: number, maxSize: number): Lru<V> =>
    new LRUCache<string, CacheEntry<V>, FetchContext>({
      max,
      // The bound counts each token with its key (what the entry costs beyond a few objects).
      ...(maxSize > 0
        ? { maxSize, sizeCalculation: (e: CacheEntry<V>, id: string) => e.bytes + id.length }
        : {}),
      // A token's time left is counted on the monotonic clock from its fetch: on the wall clock, a
      // step back of an hour kept serving it an hour past its expiry. `peek` checks the wall
      // clock too: a token is a miss once either says it has under a minute left.
      perf: { now: clock },
      ttlResolution: 0,
      // A fetch outlives the eviction of its entry (its caller still gets the token); only the
      // service's stop aborts it.
      ignoreFetchAbort: true,
      // A failed re-fetch puts the old token back (until its own TTL) and rejects to the caller.
      noDeleteOnFetchRejection: true,
      onInsert(e, id) {
        if (!isEntry(e) || e.passing) return
        const old = held.get(id)
        if (old) heldBytes -= old.bytes
        held.set(id, e)
        heldBytes += e.bytes
      },
      dispose(e, id) {
        if (!isEntry(e) || held.get(id) !== e) return
        held.delete(id)
        heldBytes -= e.bytes
      },
      async fetchMethod(id, stale, { options, context }) {
        const signal = context.signal ? AbortSignal.any([context.signal, stopped]) : stopped
        const value = await opts.fetch(context.key, signal)
        const t = now()
        const expiresAt = opts.expiresAt(value)
        // Cached until a minute before expiry: from then on, a miss.
        const ttl = expiresAt - MIN_REMAINING_MS - t
        options.ttl = Math.max(1, ttl)
        return {
          // A target's is its file's token however short: held, and written.
          passing: ttl <= 0 && !targetIds.has(id),
          key: context.key,
          value,
          expiresAt,
          fetchedAt: t,
          lastUsed: stale?.lastUsed ?? t,
          bytes: opts.size(value),
        }
      },
    })

  /**
   * The fetches `get` started, with how many callers wait for each: one nobody waits for any more
   * (every client's TOKEN_SERVER_TIMEOUT passed) is aborted, not retried for 30 s; during a ZTS
   * outage clients naming new keys opened sockets to ZTS three times faster than their own
   * connections, past the process's file descriptors.
   */
  const misses = new Map<string, Miss<V>>()
  const targetIds = new Set((opts.targets ?? []).map(describeKey))
  const targets = make(Math.max(1, targetIds.size), 0)
  const lru = make(opts.maxEntries, opts.maxBytes)
  const cacheOf = (id: string) => (targetIds.has(id) ? targets : lru)
  /**
   * A passing token lru-cache has stored (a fetch's value always is) is taken out again: left
   * until its 1 ms TTL was purged, it took the room of a valid token, which was evicted for it.
   */
  const dropPassing = (id: string, e: CacheEntry<V> | undefined) => {
    if (e?.passing && lru.peek(id, { allowStale: true }) === e) lru.delete(id)
    return e
  }

  function peek(key: CacheKey): V | undefined {
    const id = describeKey(key)
    // get(): a hit moves the entry to the most recently used end; during a re-fetch of a token
    // still valid it returns that token; past the TTL (under a minute left) it is a miss.
    const hit = cacheOf(id).get(id)
    if (!hit || hit.passing) return undefined
    const t = now()
    if (hit.expiresAt - MIN_REMAINING_MS <= t) return undefined
    hit.lastUsed = t
    return hit.value
  }

  return {
    peek,
    async get(key, signal) {
      const hit = peek(key)
      if (hit !== undefined) return hit
      const id = describeKey(key)
      let miss = misses.get(id)
      // One every caller gave up on is being aborted: until it has settled, lru-cache would hand
      // it to this caller too (failed without asking ZTS). Waited out, then fetched anew.
      while (miss?.abandon.signal.aborted) {
        await (signal ? untilAborted(miss.settled, signal) : miss.settled)
        miss = misses.get(id)
      }
      if (!miss) {
        const abandon = new AbortController()
        // Forced: what the cache holds under `id` was a miss for `peek` (a wall clock that says it
        // has expired), and lru-cache would hand it back, not fetch.
        const entry = cacheOf(id)
          .fetch(id, { forceRefresh: true, context: { key, signal: abandon.signal } })
          .then((e) => dropPassing(id, e))
        const settled = entry.then(
          () => {},
          () => {},
        )
        const started: Miss<V> = { waiters: 0, abandon, entry, settled }
        misses.set(id, started)
        void settled.then(() => misses.get(id) === started && misses.delete(id))
        miss = started
      }
      const waiting = miss
      waiting.waiters++
      let left = false
      const leave = () => {
        if (left) return
        left = true
        if (--waiting.waiters === 0 && signal?.aborted)
          waiting.abandon.abort(
            codedError('ERR_TOKEN_ABANDONED', 'every caller stopped waiting for the token', signal.reason),
          )
      }
      signal?.addEventListener('abort', leave, { once: true })
      let entry: CacheEntry<V> | undefined
      try {
        entry = await (signal ? untilAborted(waiting.entry, signal) : waiting.entry)
      } finally {
        signal?.removeEventListener('abort', leave)
        leave()
      }
      if (!entry) throw codedError('ERR_UPSTREAM', 'the token fetch was abandoned')
      entry.lastUsed = now()
      return entry.value
    },
    async refresh({ usedSince, fetchedBefore, signal, onError }) {
      const due: [Lru<V>, string, CacheKey][] = []
      for (const [id, e] of held) {
        const target = targetIds.has(id)
        if (target || (e.lastUsed >= usedSince && e.fetchedAt < fetchedBefore))
          due.push([cacheOf(id), id, e.key])
      }
      // Targets not cached yet (their boot fetch failed) are fetched too.
      for (const key of opts.targets ?? []) {
        const id = describeKey(key)
        if (!held.has(id)) due.push([targets, id, key])
      }
      const tally: RefreshTally = { updated: 0, failed: 0, skipped: held.size - due.length }
      const stop = signal ? aborted(signal) : undefined
      await eachSliced(
        due,
        REFRESH_LANES,
        async ([cache, id, key]) => {
          const fetched = cache.fetch(id, { forceRefresh: true, context: { key } }).then(
            (e) => {
              dropPassing(id, e)
              tally.updated++
            },
            (err: unknown) => {
              tally.failed++
              onError?.(key, err)
            },
          )
          // At shutdown the refresh stops at once; a fetch already made finishes on its own (a
          // request may be waiting for it) or is aborted when the service stops.
          await (stop ? Promise.race([fetched, stop]) : fetched)
        },
        signal,
      )
      return tally
    },
    evictIdle(t) {
      let n = 0
      for (const [id, e] of held) {
        if (targetIds.has(id)) continue
        if (opts.idleMs > 0 && t - e.lastUsed > opts.idleMs) {
          lru.delete(id)
          n++
        }
      }
      lru.purgeStale()
      targets.purgeStale()
      return n
    },
    entries: () => held.values(),
    stats: () => ({ entries: held.size, bytes: heldBytes }),
    clear() {
      lru.clear()
      targets.clear()
      // A get from now on fetches anew: the one in flight may be signed by what was cleared for.
      misses.clear()
      // lru-cache disposes no token being re-fetched (it keeps it beside the fetch): not held now.
      held.clear()
      heldBytes = 0
    },
  }
}
