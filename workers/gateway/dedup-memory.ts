import type { DedupEntry, DedupResult, DedupStore } from './dedup-store.js'
import type { AlertStatus } from './payload.js'

interface Entry {
  status: AlertStatus
  count: number
  firstSeen: number
  lastSeen: number
  id: string
}

/** The embedded store when REDIS_URL is empty: same semantics as Redis, one process only. */
export function createMemoryStore(ttlMs: number): DedupStore {
  const records = new Map<string, Entry>()
  let lastSweep = 0

  // Expired entries are dropped lazily on lookup, and in one pass at most once per TTL.
  const sweep = (now: number) => {
    if (now - lastSweep < ttlMs) return
    lastSweep = now
    for (const [k, r] of records) if (now - r.lastSeen >= ttlMs) records.delete(k)
  }

  return {
    kind: 'memory',
    up: () => true,
    async record(entries: readonly DedupEntry[], id: string, now: number): Promise<DedupResult[]> {
      sweep(now)
      return entries.map(({ fingerprint, status }) => {
        const r = records.get(fingerprint)
        if (r && r.status === status && now - r.lastSeen < ttlMs) {
          r.count += 1
          r.lastSeen = now
          return { isNew: false, count: r.count, firstSeen: r.firstSeen, lastSeen: now }
        }
        records.set(fingerprint, { status, count: 1, firstSeen: now, lastSeen: now, id })
        return { isNew: true, count: 1, firstSeen: now, lastSeen: now }
      })
    },
    async rollback(fingerprints, id) {
      for (const fp of fingerprints) if (records.get(fp)?.id === id) records.delete(fp)
    },
  }
}
