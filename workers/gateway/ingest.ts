import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { monotonicMs } from '../../shared/clock.js'
import { withDeadline } from '../../shared/deadline.js'
import { type CodedError, codedError } from '../../shared/errors.js'
import type { HitFailpoint } from '../../shared/failpoints.js'
import type { RepeatGate } from '../../shared/log-repeats.js'
import type { Logger } from '../../shared/logger.js'
import { forEachSliced, mapSliced } from '../../shared/slices.js'
import { type DedupEntry, type DedupResult, type DedupStore, KEY_REFUSED } from './dedup-store.js'
import { fingerprintOf } from './fingerprint.js'
import type { GatewayMetrics } from './metrics.js'
import type { Alert, Webhook } from './payload.js'
import { isSinkDeferral, isSinkRefusal, type Sink, type SinkRecord, toSinkRecord } from './sink.js'

/** DESIGN.md §3: inside the gateway, after deduplication and before the sink write of a batch. */
export const BEFORE_SINK = 'gateway.before-sink'
/** First pause before asking again about an alert another request is writing; doubles up to the cap. */
const PENDING_POLL_FIRST_MS = 10
const PENDING_POLL_MAX_MS = 200

export interface IngestOptions {
  fingerprintLabels: readonly string[]
  recordResolved: boolean
  store: DedupStore
  sink: Sink
  metrics: GatewayMetrics
  log: Logger
  /**
   * Where the failures each request meets while the store fails (every request, the same way)
   * are logged: once a window, then counted.
   */
  repeats: RepeatGate
  /**
   * How long a request waits for alerts another request holds a live lease on (it is writing
   * them) to be committed, before it answers 503 for them.
   */
  pendingWaitMs: number
  /**
   * How long a batch waits for the sink to take it (GATEWAY_SINK_TIMEOUT): a sink that hangs (a
   * frozen file system, a FIFO nobody reads, an API server that never answers) fails the batch
   * with 503, as a sink error does, rather than holding the request and its slot.
   */
  sinkTimeoutMs: number
  failpoint: HitFailpoint
  /**
   * Told of a sink write that stored its batch (true) or failed it (false): readiness follows the
   * sink. A write only slow or deferred is told neither.
   */
  onSinkWrite?(ok: boolean): void
  /** Whether the dedup store answered a batch (readiness: health.ts). */
  onStoreCall?(ok: boolean): void
  /**
   * Takes work that outlives the answer: the commit after the sink write. The alerts are stored
   * by then (the 2xx rests on that); the commit only keeps a later repeat from being written
   * again, so the answer does not wait a Redis round trip for it. Shutdown awaits this work
   * before the store closes.
   */
  background(work: Promise<void>): void
}

/**
 * - created: new, and now in the sink;
 * - duplicate: already stored (within the TTL), or a repeat inside the batch;
 * - ignored: resolved, with GATEWAY_RECORD_RESOLVED=false;
 * - rejected: refused by the sink for what it holds (logged whole; no retry could store it);
 * - pending: another request was still writing it when the wait ran out (the batch gets 503);
 * - failed: the sink write or the dedup store failed (the batch gets 503; nothing recorded).
 */
export type AlertState = 'created' | 'duplicate' | 'ignored' | 'rejected' | 'pending' | 'failed'

export interface AlertOutcome {
  fingerprint: string
  alertStatus: 'firing' | 'resolved'
  status: AlertState
  count?: number
  firstSeen?: number
  lastSeen?: number
}

export interface IngestOutcome {
  created: number
  duplicates: number
  ignored: number
  rejected: number
  pending: number
  failed: number
  /** Why the batch failed, when some alert did. */
  failure?: 'store-unavailable' | 'store-refused' | 'sink-failed'
  alerts: AlertOutcome[]
}

interface Item {
  alert: Alert
  fingerprint: string
  outcome: AlertOutcome
  /**
   * Written to the sink when new. A resolved alert with GATEWAY_RECORD_RESOLVED=false is not, but
   * it is still recorded in the store: its status changes there, so the alert's next firing (a
   * re-fire) is new, not a duplicate of the firing before the resolution.
   */
  sinkable: boolean
}

/**
 * Every alert of the batch, firing and resolved: lease in one round trip, every new one to the
 * sink, then answer and commit. A sink failure releases this batch's leases, so AlertManager's
 * retry of the request is new again; a death between lease and commit leaves leases that expire,
 * with the same effect. An alert another request is writing is not written twice: this request
 * waits (briefly) for that commit, and answers 503 if it does not come. So an alert is in the sink
 * or its request got a 5xx, and within one lease it is written once.
 */
export function createIngest(opts: IngestOptions): (webhook: Webhook) => Promise<IngestOutcome> {
  const { store, sink, metrics, log, repeats } = opts
  // A lease's owner is unique per request across every gateway on the store: a random prefix per
  // worker and a counter (a randomUUID per request cost as much as the rest of its dedup call).
  const ownerPrefix = `${randomBytes(12).toString('base64url')}.`
  let requests = 0
  // One log line per failure episode of the sink: the first failure, then the recovery.
  let sinkFailures = 0
  /** Counts every write, or record of one, that the sink stored: what any batch got through. */
  let sinkProgress = 0

  /** A store call that failed, as every request meets it while the store fails: said once a window. */
  const storeFailed = (event: string, err: unknown, msg: string) => {
    const { message } = err as Error
    repeats.log('warn', { event }, message, { err: { message } }, msg)
  }

  /** Never rejects: a failed commit is logged, and its leases expire on their own. */
  const commit = async (entries: DedupEntry[], owner: string): Promise<void> => {
    try {
      const lost = await store.commit(entries, owner, Date.now())
      if (lost.length > 0) {
        log.warn(
          { event: 'gateway.dedup.lease.lost', count: lost.length },
          'a lease expired or was overwritten during the sink write: possibly written twice',
        )
      }
    } catch (err) {
      // The alerts are stored: the answer was a 2xx. Their leases expire, so a later repeat may
      // be written again (at least once).
      storeFailed('gateway.dedup.commit.failed', err, 'commit after the sink write failed')
    }
  }

  /** Writes the fresh items and commits them; resolves to true when all are stored, else to those that are. */
  const writeAndCommit = async (
    fresh: readonly Item[],
    owner: string,
    webhook: Webhook,
    receivedAt: string,
  ): Promise<true | readonly Item[]> => {
    const toSink = fresh.filter((a) => a.sinkable)
    if (toSink.length === 0) return commitLater(fresh, owner)
    let records: SinkRecord[] = []
    // Only a sink that stores records one by one reports them (sink.ts), and only then is a set made.
    let stored: Set<Item> | undefined
    const progressBefore = sinkProgress
    try {
      await opts.failpoint(BEFORE_SINK)
      records = await mapSliced(toSink, (a) => toSinkRecord(a.alert, a.fingerprint, webhook, receivedAt))
      await withDeadline(
        opts.sinkTimeoutMs,
        (signal) =>
          sink.write(records, signal, (i) => {
            stored ??= new Set()
            stored.add(toSink[i]!)
            sinkProgress++
          }),
        () =>
          codedError('ERR_SINK_TIMEOUT', `the sink did not take the batch within ${opts.sinkTimeoutMs}ms`),
      )
    } catch (err) {
      if (isSinkRefusal(err)) {
        // Stored but for these, which no retry could store: each is logged whole (nothing is
        // lost) and committed, so that AlertManager's retry is a duplicate, not a loop.
        for (const { index, reason } of err.refused) {
          toSink[index]!.outcome.status = 'rejected'
          log.error(
            { event: 'gateway.sink.rejected', sink: sink.name, reason, alert: records[index] },
            `the ${sink.name} sink refused an alert: ${reason}`,
          )
        }
        metrics.rejected.inc(err.refused.length)
        return sinkTookIt(fresh, owner)
      }
      // A sink that stored some of the batch before its deadline ran out, or some of the other
      // batches' meanwhile (this one queued behind them), is slow, not down: readiness is not
      // taken away, nor by a write it deferred. Nor given back: what was stored may predate a
      // newer batch's failure (an API server that broke while this one waited in the queue), and
      // taken for a success it made the gateway ready while every create failed. One that failed
      // (Redis out of memory after a few dozen records, a disk full) is down, whatever it took first.
      const slow =
        (err as { code?: string }).code === 'ERR_SINK_TIMEOUT' &&
        (stored !== undefined || sinkProgress !== progressBefore)
      if (!slow && !isSinkDeferral(err)) opts.onSinkWrite?.(false)
      metrics.sinkErrors.inc({ sink: sink.name })
      if (sinkFailures++ === 0) {
        const { message, code } = err as NodeJS.ErrnoException
        log.error(
          { event: 'gateway.sink.failed', sink: sink.name, err: { message, code } },
          `sink write failed: ${message}`,
        )
      } else log.debug({ sink: sink.name, failures: sinkFailures }, 'sink write failed again')
      // What was stored is committed (AlertManager's retry of the batch finds it a duplicate,
      // and writes only the rest: a batch too slow for one deadline still gets through in a few
      // retries); an alert is stored when every item of its fingerprint is.
      const some = stored
      const unstored = some && new Set(toSink.filter((a) => !some.has(a)).map((a) => a.fingerprint))
      const kept = unstored ? fresh.filter((a) => !unstored.has(a.fingerprint)) : []
      const released = [...(unstored ?? new Set(fresh.map((a) => a.fingerprint)))]
      await store
        .release(released, owner)
        .catch((rbErr: unknown) =>
          storeFailed(
            'gateway.release.failed',
            rbErr,
            'releasing the leases failed; they expire on their own',
          ),
        )
      if (kept.length > 0) commitLater(kept, owner)
      return kept
    }
    return sinkTookIt(fresh, owner)
  }

  const sinkTookIt = (fresh: readonly Item[], owner: string): true => {
    sinkProgress++
    opts.onSinkWrite?.(true)
    if (sinkFailures > 0) {
      log.info(
        { event: 'gateway.sink.recovered', sink: sink.name, failures: sinkFailures },
        `sink writes succeed again after ${sinkFailures} failures`,
      )
      sinkFailures = 0
    }
    return commitLater(fresh, owner)
  }

  /** One commit per fingerprint, with the status written last (a batch may hold its resolution). */
  const commitLater = (fresh: readonly Item[], owner: string): true => {
    const last = new Map<string, DedupEntry>()
    for (const a of fresh) last.set(a.fingerprint, { fingerprint: a.fingerprint, status: a.alert.status })
    opts.background(commit([...last.values()], owner))
    return true
  }

  return async (webhook) => {
    const now = Date.now()
    const receivedAt = new Date(now).toISOString()
    const received = { firing: 0, resolved: 0 }
    const items: Item[] = await mapSliced(webhook.alerts, (alert): Item => {
      const fingerprint = fingerprintOf(alert, opts.fingerprintLabels)
      received[alert.status]++
      return {
        alert,
        fingerprint,
        outcome: { fingerprint, alertStatus: alert.status, status: 'pending' },
        sinkable: opts.recordResolved || alert.status === 'firing',
      }
    })
    for (const status of ['firing', 'resolved'] as const) {
      if (received[status] > 0) metrics.received.inc({ status }, received[status])
    }

    const owner = ownerPrefix + (requests++).toString(36)
    // On the monotonic clock: a wall clock stepped back would hold a request behind a stuck
    // lease for as long as the step.
    const deadline = monotonicMs() + opts.pendingWaitMs
    let failure: IngestOutcome['failure']
    let todo = items
    for (let round = 0, pause = PENDING_POLL_FIRST_MS; todo.length > 0; round++) {
      let results: DedupResult[]
      try {
        results = await store.record(
          todo.map((a) => ({ fingerprint: a.fingerprint, status: a.alert.status })),
          owner,
          round === 0 ? now : Date.now(),
        )
      } catch (err) {
        storeFailed('gateway.dedup.failed', err, 'dedup failed')
        // A refused key is one alert's record: it says nothing of whether the store takes writes.
        const refused = (err as CodedError).code === KEY_REFUSED
        if (!refused) opts.onStoreCall?.(false)
        for (const a of todo) a.outcome.status = 'failed'
        failure = refused ? 'store-refused' : 'store-unavailable'
        break
      }
      opts.onStoreCall?.(true)
      const fresh: Item[] = []
      const waiting: Item[] = []
      await forEachSliced(todo, (a, i) => {
        const r = results[i]!
        if (r.state === 'pending') {
          waiting.push(a)
          return
        }
        Object.assign(a.outcome, { count: r.count, firstSeen: r.firstSeen, lastSeen: r.lastSeen })
        if (r.state === 'duplicate') a.outcome.status = 'duplicate'
        else fresh.push(a)
      })
      if (fresh.length > 0) {
        const written = await writeAndCommit(fresh, owner, webhook, receivedAt)
        const some = written === true ? undefined : new Set(written)
        for (const a of fresh) {
          if (a.outcome.status !== 'rejected') a.outcome.status = !some || some.has(a) ? 'created' : 'failed'
        }
        if (some && some.size < fresh.length) {
          failure = 'sink-failed'
          break
        }
      }
      todo = waiting
      if (todo.length === 0 || monotonicMs() + pause > deadline) break
      await sleep(pause)
      pause = Math.min(pause * 2, PENDING_POLL_MAX_MS)
    }

    const counts: Record<AlertState, number> = {
      created: 0,
      duplicate: 0,
      ignored: 0,
      rejected: 0,
      pending: 0,
      failed: 0,
    }
    for (const a of items) {
      // Recorded, not stored: ignored, whether its resolution was new or a repeat.
      if (!a.sinkable && (a.outcome.status === 'created' || a.outcome.status === 'duplicate'))
        a.outcome.status = 'ignored'
      counts[a.outcome.status]++
    }
    const outcome: IngestOutcome = {
      created: counts.created,
      duplicates: counts.duplicate,
      ignored: counts.ignored,
      rejected: counts.rejected,
      pending: counts.pending,
      failed: counts.failed,
      ...(failure && { failure }),
      alerts: items.map((a) => a.outcome),
    }
    metrics.created.inc(outcome.created)
    metrics.deduplicated.inc(outcome.duplicates)
    log.debug(
      { event: 'gateway.accepted', created: outcome.created, duplicates: outcome.duplicates },
      'batch done',
    )
    return outcome
  }
}
