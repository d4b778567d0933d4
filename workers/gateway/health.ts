import type { Logger } from '../../shared/logger.js'
import type { Degradation } from '../../shared/status-board.js'
import type { DedupStore } from './dedup-store.js'
import type { Sink } from './sink.js'

/** How often the state is written to the status board, and a failing sink probed. */
export const HEALTH_CHECK_MS = 250
const SINK_PROBE_MS = 1000
/** A sink with no probe is given traffic again this long after its last failure (half-open). */
const SINK_COOLDOWN_MS = 5000

export interface GatewayHealth {
  /** A sink write failed: not ready until the sink takes a write (or a probe) again. */
  sinkFailed(): void
  /** A sink write succeeded. */
  sinkSucceeded(): void
  sinkUp(): boolean
  /** The dedup store failed a batch while connected (out of memory, read-only, too slow). */
  storeFailed(): void
  /** The dedup store answered a batch. */
  storeSucceeded(): void
  current(): Degradation[]
  stop(): void
}

export interface GatewayHealthOptions {
  store: DedupStore
  sink: Sink
  log: Logger
  /** Where the state goes: the gateway's cell of the status board. */
  publish(reasons: readonly Degradation[]): void
}

/**
 * Readiness that tells the truth (DESIGN.md §7): the gateway is not ready while it can accept
 * nothing — its Redis is unreachable (down, wrong password) or its sink fails — and ready again
 * as soon as it recovers. Liveness is not touched: the worker is healthy, what it needs is not.
 *
 * A failed sink is probed (`Sink.probe`: for the file sink, room on the disk for the write that
 * failed) every second, because a not-ready pod receives no traffic that could show the recovery.
 * The state is re-published every HEALTH_CHECK_MS, so a replacement worker's view wins at once.
 */
export function createGatewayHealth(opts: GatewayHealthOptions): GatewayHealth {
  const { store, sink, log } = opts
  let sinkDownSince: number | undefined
  let probing = false
  let lastProbe = 0
  // A connected store that fails (refuses writes, or answers too late) is not ready either,
  // until a write probe, once a second, goes through.
  let storeDown = false
  let storeProbing = false
  let lastStoreProbe = 0
  let published = ''

  const current = (): Degradation[] => {
    const reasons: Degradation[] = []
    if (store.kind === 'redis' && (!store.up() || storeDown)) reasons.push('redis')
    if (sinkDownSince !== undefined) reasons.push('sink')
    return reasons
  }
  const publish = () => {
    const reasons = current()
    opts.publish(reasons)
    const text = reasons.join(',')
    if (text !== published) {
      if (text) log.warn({ event: 'gateway.not-ready', degraded: text }, `not ready: ${text} unusable`)
      else log.info({ event: 'gateway.ready-again' }, 'ready again: the dedup store and the sink are usable')
      published = text
    }
  }
  const sinkRecovered = () => {
    if (sinkDownSince === undefined) return
    sinkDownSince = undefined
    publish()
  }
  const probe = () => {
    const now = Date.now()
    if (sinkDownSince === undefined || probing || now - lastProbe < SINK_PROBE_MS) return
    lastProbe = now
    if (!sink.probe) {
      if (now - sinkDownSince >= SINK_COOLDOWN_MS) sinkRecovered()
      return
    }
    probing = true
    sink
      .probe()
      .then(sinkRecovered, (err: unknown) =>
        log.debug({ err: { message: (err as Error).message } }, 'the sink is still failing'),
      )
      .finally(() => {
        probing = false
      })
  }

  const storeRecovered = () => {
    if (!storeDown) return
    storeDown = false
    publish()
  }
  const probeStore = () => {
    const now = Date.now()
    if (!storeDown || storeProbing || !store.probe || now - lastStoreProbe < SINK_PROBE_MS) return
    lastStoreProbe = now
    storeProbing = true
    store
      .probe()
      .then(storeRecovered, (err: unknown) =>
        log.debug({ err: { message: (err as Error).message } }, 'the dedup store is still failing'),
      )
      .finally(() => {
        storeProbing = false
      })
  }

  publish()
  const timer = setInterval(() => {
    probe()
    probeStore()
    publish()
  }, HEALTH_CHECK_MS)
  timer.unref()

  return {
    sinkFailed() {
      const first = sinkDownSince === undefined
      sinkDownSince = Date.now()
      if (first) {
        lastProbe = sinkDownSince
        publish()
      }
    },
    sinkSucceeded: sinkRecovered,
    storeFailed() {
      if (storeDown || store.kind !== 'redis') return
      storeDown = true
      lastStoreProbe = Date.now()
      publish()
    },
    storeSucceeded: storeRecovered,
    sinkUp: () => sinkDownSince === undefined,
    current,
    stop: () => clearInterval(timer),
  }
}
