import { createHash } from 'node:crypto'
import type { Alert } from './payload.js'

/**
 * The identity of an alert for deduplication. With `labels` configured: a hash of just those
 * labels (a missing one counts as empty). Otherwise AlertManager's own fingerprint when it sent
 * one, else a hash of the whole label set. Labels are sorted so the order on the wire is irrelevant.
 */
export function fingerprintOf(alert: Alert, labels: readonly string[]): string {
  if (labels.length > 0)
    return hashLabels(
      labels.map((name) => [name, Object.hasOwn(alert.labels, name) ? alert.labels[name]! : '']),
    )
  if (alert.fingerprint) return alert.fingerprint
  return hashLabels(Object.entries(alert.labels))
}

function hashLabels(pairs: [string, string][]): string {
  const sorted = [...pairs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  // JSON keeps names and values unambiguous, whatever characters they contain.
  return createHash('sha256').update(JSON.stringify(sorted)).digest('hex').slice(0, 32)
}
