import { type CodedError, codedError } from '../../shared/errors.js'
import type { AlertStatus } from './payload.js'

export interface DedupEntry {
  fingerprint: string
  status: AlertStatus
  /**
   * When what this notification tells happened, if it said (epoch ms): a firing's `startsAt`, a
   * resolution's `endsAt`. What tells a late resolution of an earlier episode from news (`stale`).
   */
  at?: number | undefined
}

/**
 * - `new`: this request now holds a short *pending* lease on the fingerprint; it writes the alert
 *   to the sink, then commits (or releases the lease when the write failed).
 * - `duplicate`: a committed record in this status within the TTL (or a repeat inside this batch).
 * - `pending`: another live request (another replica, AlertManager's HA peer, an earlier attempt
 *   still running) holds the lease and is writing this alert right now: not written twice.
 * - `stale`: a resolution that ended well before the firing on record began (`isStale`): overtaken by
 *   the alert firing again. Written, it would leave the sink saying resolved for an alert that
 *   fires. The record is untouched.
 */
export type DedupState = 'new' | 'duplicate' | 'pending' | 'stale'

export interface DedupResult {
  state: DedupState
  /** Arrivals in this status, this one included (for `pending`: the holder's count so far). */
  count: number
  firstSeen: number
  lastSeen: number
}

/**
 * Atomic check-and-lease of a batch, in order (a repeat inside one batch is a duplicate).
 * A fingerprint is new on its first arrival, and again when its status changes (the resolution
 * of a firing alert, or a re-fire). A new record is first a pending lease owned by the request
 * (`owner`, unique per request) that lives `leaseMs`; `commit` turns it into a record that lives
 * the TTL, which slides with every later arrival. A lease whose owner died (crash, OOM, SIGKILL,
 * shutdown deadline) simply expires: the retry of that alert is new again, never a "duplicate"
 * of an alert that was not stored.
 */
export interface DedupStore {
  readonly kind: 'memory' | 'redis'
  record(entries: readonly DedupEntry[], owner: string, now: number): Promise<DedupResult[]>
  /**
   * Makes the leases of `owner` on these fingerprints committed records (after the sink write);
   * one entry per fingerprint, with the status last written. A lease that ran out unclaimed is
   * recorded anew. Returns the fingerprints whose lease someone else holds or committed meanwhile
   * (ours expired: the alert may have been written twice, which at-least-once allows).
   */
  commit(entries: readonly DedupEntry[], owner: string, now: number): Promise<string[]>
  /** Drops the pending leases of `owner` (never anyone else's) so a retry of the request is new. */
  release(fingerprints: readonly string[], owner: string): Promise<void>
  /** False while the store cannot be reached: requests get 503 at once. */
  up(): boolean
  /**
   * Resolves once the store takes a write again: how a store that answers but refuses (out of
   * memory, a read-only replica) or does not answer in time is seen to recover with no traffic.
   */
  probe?(): Promise<void>
}

/**
 * How much earlier than the firing on record a resolution must have ended to be stale. The two
 * times may come from different clocks (a client's `endsAt`, AlertManager's or another
 * Prometheus's `startsAt`), and AlertManager moves an episode's start earlier when it merges a
 * copy that says so (two Prometheus replicas' starts differ by up to an evaluation interval):
 * the record keeps the start its first firing said. A resolution dropped for either would leave
 * the sink saying firing for good; episodes closer together than this are not ordered.
 */
export const STALE_MARGIN_MS = 5 * 60_000

/**
 * Whether an arrival is a resolution overtaken by the record: one that ended (`at`, its `endsAt`)
 * well before the firing on record began (`recordedAt`, the `startsAt` its first notification
 * said), as an HA peer's or a retry's late notification of an earlier episode does once the
 * alert has fired again. AlertManager merges what overlaps into one episode, so a new episode
 * starts once the one before has ended, and a resolution of the episode on record ends after it
 * began. The record's start is not moved by later firings: a late firing of the earlier episode
 * (the same peer's backlog) would drag it back to before the resolution that follows it. Only a
 * resolution: a late firing cannot be told from the alert firing again with the same `startsAt`
 * (Prometheus restores it after a restart, while AlertManager resolved the alert in the gap), and
 * dropping that would hide a firing alert; written, a late firing is at worst a false alarm,
 * ended by the next resolution. Without a time on either side nothing is ordered. The Redis
 * store's scripts say the same in Lua (dedup-redis.ts).
 */
export function isStale(
  recorded: AlertStatus,
  recordedAt: number | undefined,
  status: AlertStatus,
  at: number | undefined,
): boolean {
  return (
    status === 'resolved' &&
    recorded === 'firing' &&
    recordedAt !== undefined &&
    at !== undefined &&
    at + STALE_MARGIN_MS < recordedAt
  )
}

/** RFC 3339, as AlertManager writes times (Date.parse alone takes other forms, in local time). */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/i

/** A `startsAt` or `endsAt` as epoch ms; undefined when absent, not RFC 3339, or Go's zero time. */
export function timeOf(text: string | undefined): number | undefined {
  if (text === undefined || !RFC3339.test(text)) return undefined
  const ms = Date.parse(text)
  return ms > 0 ? ms : undefined
}

/** The store could not answer: the request gets 503 and AlertManager retries. */
export function storeUnavailable(message: string, cause?: unknown): CodedError {
  return codedError('ERR_DEDUP_UNAVAILABLE', message, cause)
}
