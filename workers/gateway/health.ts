import { monotonicMs } from '../../shared/clock.js'
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
  /** The dedup store takes writes: what readiness says of it (gateway_dedup_store_up). */
  storeUp(): boolean
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
 * The state is re-published every HEALTH_CHECK_MS, so a successor's view wins at once once it
 * serves (before, the row is its predecessor's: shared/define-service.ts).
 */
export function createGatewayHealth(opts: GatewayHealthOptions): GatewayHealth {
  const { store, sink, log } = opts
  let published = ''
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
  // A sink with no probe is given traffic again after a cooldown (half-open).
  const sinkState = probedDown(sink.probe?.bind(sink), SINK_COOLDOWN_MS, publish, log, 'the sink')
  // A connected store that fails (refuses writes, or answers too late) is not ready either,
  // until a write probe goes through.
  const storeState = probedDown(store.probe?.bind(store), undefined, publish, log, 'the dedup store')
  const storeUp = () => store.kind !== 'redis' || (store.up() && !storeState.down())
  const current = (): Degradation[] => {
    const reasons: Degradation[] = []
    if (!storeUp()) reasons.push('redis')
    if (sinkState.down()) reasons.push('sink')
    return reasons
  }

  // A sink that could not even be opened starts down, and is probed back.
  if (sink.usable?.() === false) sinkState.fail()
  publish()
  const timer = setInterval(() => {
    sinkState.tick()
    storeState.tick()
    publish()
  }, HEALTH_CHECK_MS)
  timer.unref()

  return {
    sinkFailed: sinkState.fail,
    sinkSucceeded: sinkState.recover,
    sinkUp: () => !sinkState.down(),
    storeUp,
    storeFailed() {
      if (store.kind === 'redis') storeState.fail()
    },
    storeSucceeded: storeState.recover,
    current,
    stop: () => clearInterval(timer),
  }
}

/**
 * One thing the gateway needs, failed and probed back: down from its first failure until a probe,
 * once a second (a not-ready pod receives no traffic that could show the recovery), or, with no
 * probe, a cooldown after its last failure, or a success.
 */
function probedDown(
  probe: (() => Promise<void>) | undefined,
  cooldownMs: number | undefined,
  changed: () => void,
  log: Logger,
  what: string,
) {
  let downSince: number | undefined
  let probing = false
  let lastProbe = 0
  const recover = () => {
    if (downSince === undefined) return
    downSince = undefined
    changed()
  }
  return {
    down: () => downSince !== undefined,
    fail() {
      const first = downSince === undefined
      downSince = monotonicMs()
      if (first) {
        lastProbe = downSince
        changed()
      }
    },
    recover,
    tick() {
      const now = monotonicMs()
      if (downSince === undefined || probing || now - lastProbe < SINK_PROBE_MS) return
      lastProbe = now
      if (!probe) {
        if (cooldownMs !== undefined && now - downSince >= cooldownMs) recover()
        return
      }
      probing = true
      probe()
        .then(recover, (err: unknown) =>
          log.debug({ err: { message: (err as Error).message } }, `${what} is still failing`),
        )
        .finally(() => {
          probing = false
        })
    },
  }
}
