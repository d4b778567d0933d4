import { forEachSliced, mapSliced } from '../../shared/slices.js'
import type { DedupEntry, DedupResult, DedupStore } from './dedup-store.js'
import type { AlertStatus } from './payload.js'

interface Entry {
  status: AlertStatus
  count: number
  firstSeen: number
  lastSeen: number
  owner: string
  /** A lease not yet committed: its owner is writing the alert to the sink. */
  pending: boolean
  /** Pending: the end of the lease; committed: last arrival + TTL. */
  expiresAt: number
}

export interface MemoryStoreOptions {
  ttlMs: number
  leaseMs: number
  /** At most this many fingerprints are kept; the least recently seen go first (0: no cap). */
  maxEntries: number
}

/**
 * The embedded store when REDIS_URL is empty: the semantics of the Redis store, one process only.
 * The map is kept in order of last arrival (a touched entry moves to the end), so the oldest are
 * first both for expiry and for eviction at the size cap.
 */
export function createMemoryStore(opts: MemoryStoreOptions): DedupStore {
  const { ttlMs, leaseMs, maxEntries } = opts
  const records = new Map<string, Entry>()
  let lastSweep = 0

  // Expired entries are dropped lazily on lookup, and in one pass at most once per TTL.
  const sweep = (now: number) => {
    if (now - lastSweep < Math.min(ttlMs, leaseMs)) return
    lastSweep = now
    for (const [k, r] of records) if (now >= r.expiresAt) records.delete(k)
  }
  const live = (fp: string, now: number) => {
    const r = records.get(fp)
    if (r && now >= r.expiresAt) {
      records.delete(fp)
      return undefined
    }
    return r
  }
  const put = (fp: string, r: Entry) => {
    records.delete(fp) // re-inserted at the end: the most recently seen
    records.set(fp, r)
    if (maxEntries > 0) {
      // A lease is never evicted: its alert is being written, and a repeat let in as new would
      // be written twice. Leases are the most recently put, at the end; while they alone exceed
      // the cap, it is exceeded by the alerts in flight (GATEWAY_MAX_INFLIGHT bounds them).
      for (const [oldest, entry] of records) {
        if (records.size <= maxEntries) break
        if (!entry.pending) records.delete(oldest)
      }
    }
  }

  return {
    kind: 'memory',
    up: () => true,
    // A batch's entries are taken in slices of the loop; each entry's check-and-lease is one
    // synchronous step, as atomic as the Redis store's per key.
    async record(entries: readonly DedupEntry[], owner: string, now: number): Promise<DedupResult[]> {
      sweep(now)
      return mapSliced(entries, ({ fingerprint, status }): DedupResult => {
        const r = live(fingerprint, now)
        if (r?.pending && r.owner !== owner) {
          return { state: 'pending', count: r.count, firstSeen: r.firstSeen, lastSeen: r.lastSeen }
        }
        if (r && r.status === status) {
          r.count += 1
          r.lastSeen = now
          if (!r.pending) r.expiresAt = now + ttlMs
          put(fingerprint, r)
          return { state: 'duplicate', count: r.count, firstSeen: r.firstSeen, lastSeen: now }
        }
        put(fingerprint, {
          status,
          count: 1,
          firstSeen: now,
          lastSeen: now,
          owner,
          pending: true,
          expiresAt: now + leaseMs,
        })
        return { state: 'new', count: 1, firstSeen: now, lastSeen: now }
      })
    },
    async commit(entries, owner, now) {
      const lost: string[] = []
      await forEachSliced(entries, ({ fingerprint, status }) => {
        const r = records.get(fingerprint)
        if (r?.owner === owner) {
          r.pending = false
          r.expiresAt = now + ttlMs
        } else if (!r || now >= r.expiresAt) {
          // Our lease ran out before the commit and nobody took it: the alert is written, record it.
          put(fingerprint, {
            status,
            count: 1,
            firstSeen: now,
            lastSeen: now,
            owner,
            pending: false,
            expiresAt: now + ttlMs,
          })
        } else lost.push(fingerprint)
      })
      return lost
    },
    async release(fingerprints, owner) {
      for (const fp of fingerprints) {
        const r = records.get(fp)
        if (r?.pending && r.owner === owner) records.delete(fp)
      }
    },
  }
}
