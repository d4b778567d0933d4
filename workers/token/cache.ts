/**
 * The token cache of the Go original, keyed by (domain, role, proxy principal, min/max expiry):
 * concurrent misses for one key share one upstream fetch; an entry with less than a minute left
 * is a miss; `refreshAll` renews every entry (the refresh-timer); entries nobody asked for within
 * `idleMs` are dropped, except the configured targets (the original never drops anything).
 */
export const MIN_REMAINING_MS = 60_000

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
  lastUsed: number
  bytes: number
}

export interface TokenCache<V> {
  /** A fresh cached token, or undefined: the synchronous path of every cache hit. */
  peek(key: CacheKey): V | undefined
  /** A fresh cached token, or one fetched now (shared with concurrent callers of the same key). */
  get(key: CacheKey): Promise<V>
  /** Fetches every entry anew; a failure keeps the old token while it is still valid. */
  refreshAll(): Promise<{ updated: number; failed: number }>
  evictIdle(now: number): number
  /** Marks `key` as a target: never evicted. */
  pin(key: CacheKey): void
  entries(): CacheEntry<V>[]
}

export interface TokenCacheOptions<V> {
  fetch(key: CacheKey): Promise<V>
  /** Epoch ms at which `value` expires. */
  expiresAt(value: V): number
  size(value: V): number
  /** 0: never evict. */
  idleMs: number
  now?: () => number
  onUpdate?(entry: CacheEntry<V>): void
}

/** The original's cache key text, `{domain:role.role,proxy,min,max}`: safe to log. */
export function describeKey(k: CacheKey): string {
  return `{${k.domain}:role.${k.role},${k.proxyForPrincipal},${k.minExpiry},${k.maxExpiry}}`
}

export function createTokenCache<V>(opts: TokenCacheOptions<V>): TokenCache<V> {
  const now = opts.now ?? Date.now
  const entries = new Map<string, CacheEntry<V>>()
  const inflight = new Map<string, Promise<CacheEntry<V>>>()
  const pinned = new Set<string>()

  const fetchShared = (id: string, key: CacheKey): Promise<CacheEntry<V>> => {
    let p = inflight.get(id)
    if (!p) {
      p = opts
        .fetch(key)
        .then((value) => {
          const entry: CacheEntry<V> = {
            key,
            value,
            expiresAt: opts.expiresAt(value),
            lastUsed: entries.get(id)?.lastUsed ?? now(),
            bytes: opts.size(value),
          }
          entries.set(id, entry)
          opts.onUpdate?.(entry)
          return entry
        })
        .finally(() => inflight.delete(id))
      inflight.set(id, p)
    }
    return p
  }

  function peek(key: CacheKey): V | undefined {
    const t = now()
    const hit = entries.get(describeKey(key))
    if (!hit || hit.expiresAt - t < MIN_REMAINING_MS) return undefined
    hit.lastUsed = t
    return hit.value
  }

  return {
    peek,
    async get(key) {
      const hit = peek(key)
      if (hit !== undefined) return hit
      const entry = await fetchShared(describeKey(key), key)
      entry.lastUsed = now()
      return entry.value
    },
    async refreshAll() {
      const results = await Promise.allSettled(
        [...entries].map(async ([id, e]) => {
          try {
            await fetchShared(id, e.key)
          } catch (err) {
            if (e.expiresAt <= now()) entries.delete(id)
            throw err
          }
        }),
      )
      const failed = results.filter((r) => r.status === 'rejected').length
      return { updated: results.length - failed, failed }
    },
    evictIdle(t) {
      let n = 0
      for (const [id, e] of entries) {
        const idle = opts.idleMs > 0 && t - e.lastUsed > opts.idleMs
        if ((idle || e.expiresAt <= t) && !pinned.has(id)) {
          entries.delete(id)
          n++
        }
      }
      return n
    },
    pin(key) {
      pinned.add(describeKey(key))
    },
    entries: () => [...entries.values()],
  }
}
