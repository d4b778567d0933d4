import { type CodedError, codedError } from '../../shared/errors.js'
import type { AlertStatus } from './payload.js'

export interface DedupEntry {
  fingerprint: string
  status: AlertStatus
}

export interface DedupResult {
  /** First arrival of this fingerprint in this status within the TTL. */
  isNew: boolean
  /** Arrivals in this status, this one included. */
  count: number
  firstSeen: number
  lastSeen: number
}

/**
 * Atomic check-and-record of a batch, in order (a repeat inside one batch is a duplicate).
 * A fingerprint is new on its first arrival, and again when its status changes (the resolution
 * of a firing alert, or a re-fire). The TTL slides: every arrival extends it.
 */
export interface DedupStore {
  readonly kind: 'memory' | 'redis'
  /** `id` marks the records this call creates, so `rollback` removes only those. */
  record(entries: readonly DedupEntry[], id: string, now: number): Promise<DedupResult[]>
  /** Forgets records created by `record(…, id)` so a retry of the request is new again. */
  rollback(fingerprints: readonly string[], id: string): Promise<void>
  /** False while the store cannot be reached: requests get 503 at once. */
  up(): boolean
}

/** The store could not answer: the request gets 503 and AlertManager retries. */
export function storeUnavailable(message: string, cause?: unknown): CodedError {
  return codedError('ERR_DEDUP_UNAVAILABLE', message, cause)
}
