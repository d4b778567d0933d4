import type { Alert, Webhook } from './payload.js'

/** One new alert, as every sink writes it. */
export interface SinkRecord {
  fingerprint: string
  alertname: string | null
  status: Alert['status']
  severity: string | null
  namespace: string | null
  labels: Record<string, string>
  annotations: Record<string, string>
  startsAt: string | null
  endsAt: string | null
  generatorURL: string | null
  receiver: string | null
  receivedAt: string
}

/**
 * A write in which the sink refused some records for what they hold (an API server's 422), while
 * it took the others and takes records like them: no retry could store those. Thrown by
 * `Sink.write` only then; any other failure is a plain error.
 */
export interface SinkRefusal extends Error {
  code: 'ERR_SINK_REFUSED'
  /** Indexes into the records written, with the sink's reason for each. */
  refused: readonly { index: number; reason: string }[]
}

export function isSinkRefusal(err: unknown): err is SinkRefusal {
  return (err as { code?: unknown } | undefined)?.code === 'ERR_SINK_REFUSED'
}

/**
 * A write in which some records could not be stored yet for the state of what is already there
 * (an API server still deleting the object of the same name), while the sink works and took the
 * others: the write failed (503: a retry stores them), and the sink is not down.
 */
export interface SinkDeferral extends Error {
  code: 'ERR_SINK_DEFERRED'
}

export function isSinkDeferral(err: unknown): err is SinkDeferral {
  return (err as { code?: unknown } | undefined)?.code === 'ERR_SINK_DEFERRED'
}

export interface Sink {
  readonly name: 'file' | 'redis-stream' | 'kubernetes'
  /**
   * Resolves once every record is durably handed over; rejects if any was not (with a
   * `SinkRefusal` when the only ones not stored can never be, a `SinkDeferral` when they can only
   * later). When `signal` aborts, a write not
   * yet begun is dropped and rejects with its reason; one already handed to the disk or the
   * network may still complete. A sink that stores records one by one calls `stored` with the
   * index of each as it is, so that a write that fails (or is cut at its deadline) half-way still
   * counts what it stored: the retry of the batch then writes only the rest, and makes progress.
   */
  write(records: readonly SinkRecord[], signal?: AbortSignal, stored?: (index: number) => void): Promise<void>
  /**
   * After a failed write: resolves once the sink could take that write now, without storing
   * anything. Without it, a failed sink gets traffic again after a cool-down (half-open).
   */
  probe?(): Promise<void>
  /** False while the sink cannot take a write at all (its file could not be opened): not ready. */
  usable?(): boolean
  /** Waits no later than `deadline` (shared/clock.ts; the shutdown's) for what is under way. */
  close(deadline?: number): Promise<void>
}

export function toSinkRecord(
  alert: Alert,
  fingerprint: string,
  webhook: Webhook,
  receivedAt: string,
): SinkRecord {
  return {
    fingerprint,
    alertname: alert.labels.alertname ?? null,
    status: alert.status,
    severity: alert.labels.severity ?? null,
    namespace: alert.labels.namespace ?? null,
    labels: alert.labels,
    annotations: alert.annotations ?? {},
    startsAt: alert.startsAt ?? null,
    endsAt: alert.endsAt ?? null,
    generatorURL: alert.generatorURL ?? null,
    receiver: webhook.receiver ?? null,
    receivedAt,
  }
}
