import { randomUUID } from 'node:crypto'
import type { Logger } from '../../shared/logger.js'
import type { DedupResult, DedupStore } from './dedup-store.js'
import { fingerprintOf } from './fingerprint.js'
import type { GatewayMetrics } from './metrics.js'
import type { Webhook } from './payload.js'
import { type Sink, toSinkRecord } from './sink.js'

export interface IngestOptions {
  fingerprintLabels: readonly string[]
  recordResolved: boolean
  store: DedupStore
  sink: Sink
  metrics: GatewayMetrics
  log: Logger
}

export interface AlertOutcome {
  fingerprint: string
  alertStatus: 'firing' | 'resolved'
  status: 'created' | 'duplicate' | 'ignored'
  count?: number
  firstSeen?: number
  lastSeen?: number
}

export type IngestOutcome =
  | { kind: 'accepted'; created: number; duplicates: number; ignored: number; alerts: AlertOutcome[] }
  | { kind: 'store-unavailable' }
  | { kind: 'sink-failed'; sink: Sink['name'] }

/**
 * Every alert of the batch, firing and resolved: dedup in one round trip, then every new one to
 * the sink. A sink failure rolls back what this batch recorded, so AlertManager's retry of the
 * whole request is new again: an alert is either in the sink or its request got a 5xx.
 */
export function createIngest(opts: IngestOptions): (webhook: Webhook) => Promise<IngestOutcome> {
  const { store, sink, metrics, log } = opts
  return async (webhook) => {
    const now = Date.now()
    const receivedAt = new Date(now).toISOString()
    const alerts = webhook.alerts.map((alert) => ({
      alert,
      fingerprint: fingerprintOf(alert, opts.fingerprintLabels),
    }))
    for (const a of alerts) metrics.received.inc({ status: a.alert.status })
    const considered = alerts.filter((a) => opts.recordResolved || a.alert.status === 'firing')

    const id = randomUUID()
    let results: DedupResult[]
    try {
      results = await store.record(
        considered.map((a) => ({ fingerprint: a.fingerprint, status: a.alert.status })),
        id,
        now,
      )
    } catch (err) {
      log.warn({ event: 'gateway.dedup.failed', err: { message: (err as Error).message } }, 'dedup failed')
      return { kind: 'store-unavailable' }
    }
    const fresh = considered.filter((_, i) => results[i]!.isNew)
    if (fresh.length > 0) {
      try {
        await sink.write(fresh.map((a) => toSinkRecord(a.alert, a.fingerprint, webhook, receivedAt)))
      } catch (err) {
        metrics.sinkErrors.inc({ sink: sink.name })
        log.error({ event: 'gateway.sink.failed', sink: sink.name, err }, 'sink write failed')
        await store
          .rollback(
            fresh.map((a) => a.fingerprint),
            id,
          )
          .catch((rbErr: unknown) =>
            log.error({ event: 'gateway.rollback.failed', err: rbErr }, 'dedup rollback failed'),
          )
        return { kind: 'sink-failed', sink: sink.name }
      }
    }
    const created = fresh.length
    const duplicates = considered.length - created
    metrics.created.inc(created)
    metrics.deduplicated.inc(duplicates)
    log.debug({ event: 'gateway.accepted', created, duplicates }, 'batch accepted')

    const outcome = new Map(considered.map((a, i) => [a, results[i]!]))
    return {
      kind: 'accepted',
      created,
      duplicates,
      ignored: alerts.length - considered.length,
      alerts: alerts.map((a): AlertOutcome => {
        const r = outcome.get(a)
        const base = { fingerprint: a.fingerprint, alertStatus: a.alert.status }
        if (!r) return { ...base, status: 'ignored' }
        const { count, firstSeen, lastSeen } = r
        return { ...base, status: r.isNew ? 'created' : 'duplicate', count, firstSeen, lastSeen }
      }),
    }
  }
}
