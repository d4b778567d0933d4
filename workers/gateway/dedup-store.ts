import { type CodedError, codedError } from '../../shared/errors.js'
import type { AlertStatus } from './payload.js'

export interface DedupEntry {
  fingerprint: string
  status: AlertStatus
}

/**
 * - `new`: this request now holds a short *pending* lease on the fingerprint; it writes the alert
 *   to the sink, then commits (or releases the lease when the write failed).
 * - `duplicate`: a committed record in this status within the TTL (or a repeat inside this batch).
 * - `pending`: another live request (another replica, AlertManager's HA peer, an earlier attempt
 *   still running) holds the lease and is writing this alert right now: not written twice.
 */
export type DedupState = 'new' | 'duplicate' | 'pending'

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
 * Redis answered but refused an alert's record: a key of another type under the prefix (someone
 * else's write). The store is up; that request gets 503 naming it, and readiness is not touched.
 */
export const KEY_REFUSED = 'ERR_DEDUP_KEY_REFUSED'

/** The store could not answer: the request gets 503 and AlertManager retries. */
export function storeUnavailable(message: string, cause?: unknown): CodedError {
  return codedError('ERR_DEDUP_UNAVAILABLE', message, cause)
}
