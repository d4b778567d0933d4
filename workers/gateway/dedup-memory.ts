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
 * Committed records are kept in order of last arrival (a touched one moves to the end), so the
 * oldest are first both for expiry and for eviction at the size cap. Leases (alerts being written)
 * are kept apart and never evicted: a repeat let in as new meanwhile would be written twice. They
 * are as many as the alerts in flight, and each ends with its commit, release or lease.
 */
export function createMemoryStore(opts: MemoryStoreOptions): DedupStore {
  const { ttlMs, leaseMs, maxEntries } = opts
  const records = new Map<string, Entry>()
  const leases = new Map<string, Entry>()
  let lastSweep = 0

  // Expired entries are dropped lazily on lookup, and in one pass at most once per TTL.
  const sweep = (now: number) => {
    if (now - lastSweep < Math.min(ttlMs, leaseMs)) return
    lastSweep = now
    for (const map of [records, leases]) for (const [k, r] of map) if (now >= r.expiresAt) map.delete(k)
  }
  /** The lease on `fp`, or else its record, if live. */
  const live = (fp: string, now: number) => {
    for (const map of [leases, records]) {
      const r = map.get(fp)
      if (r === undefined) continue
      if (now < r.expiresAt) return r
      map.delete(fp)
    }
    return undefined
  }
  const keep = (fp: string, r: Entry) => {
    records.delete(fp) // re-inserted at the end: the most recently seen
    records.set(fp, r)
    if (maxEntries > 0 && records.size > maxEntries) records.delete(records.keys().next().value as string)
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
          if (!r.pending) {
            r.expiresAt = now + ttlMs
            keep(fingerprint, r)
          }
          return { state: 'duplicate', count: r.count, firstSeen: r.firstSeen, lastSeen: now }
        }
        // A new lease: the record of the other status (if any) goes, as the Redis store's is replaced.
        records.delete(fingerprint)
        leases.set(fingerprint, {
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
        const r = leases.get(fingerprint) ?? records.get(fingerprint)
        if (r?.owner === owner) {
          leases.delete(fingerprint)
          r.pending = false
          r.expiresAt = now + ttlMs
          keep(fingerprint, r)
        } else if (!r || now >= r.expiresAt) {
          // Our lease ran out before the commit and nobody took it: the alert is written, record it.
          leases.delete(fingerprint)
          keep(fingerprint, {
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
      for (const fp of fingerprints) if (leases.get(fp)?.owner === owner) leases.delete(fp)
    },
  }
}
