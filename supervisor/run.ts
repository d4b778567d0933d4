import { setTimeout as sleep } from 'node:timers/promises'
import type { Config } from '../shared/config/types.js'
import { createFailpointCounters, createFailpoints, parseFailpoints } from '../shared/failpoints.js'
import type { Logger } from '../shared/logger.js'
import type { ScrapeResult } from '../shared/protocol.js'
import { SERVICES } from '../shared/services.js'
import { createStatusBoard, HEARTBEAT_MS } from '../shared/status-board.js'
import { createSupervisorMetrics } from './metrics.js'
import { type CancelCause, createRunContext } from './run-context.js'
import { createServiceSlot, type ServiceSlot } from './service-slot.js'
import { onSignals } from './signals.js'

/**
 * The supervisor's whole run, in the order of the seed's sequence diagram (DESIGN.md §1).
 * This is the file that answers "what happens on SIGTERM". Resolves with the exit code.
 */
export async function run(config: Config, log: Logger): Promise<number> {
  const board = createStatusBoard()
  const services = SERVICES.filter((s) => config.services[s].enabled)
  const metrics = createSupervisorMetrics(board, services)
  const failpointSpecs = parseFailpoints(config.failpoints)
  const failpointCounters = createFailpointCounters(failpointSpecs)
  const failpoint = createFailpoints(failpointSpecs, { board, counters: failpointCounters })

  // The run context: the first cause wins. Readiness drops at that very instant, before anything
  // stops, so the health check answers 503 for the whole of shutdown.
  const ctx = createRunContext((cause) => {
    board.setPhase('shutting-down')
    log.info({ event: 'supervisor.cancelled', ...describe(cause) }, `shutting down: ${cause.cause}`)
  })

  // SIGINT/SIGTERM cancel the run; any later signal is logged and changes nothing.
  onSignals((signal) => {
    if (!ctx.cancel({ cause: 'signal', signal })) {
      log.info({ event: 'supervisor.signal.ignored', signal }, `ignoring ${signal}: already shutting down`)
    }
    board.registerSignal() // after the cancel: a failpoint waiting on it sees the cancelled context
  })

  const slots = new Map<string, ServiceSlot>()
  const scrape = async (): Promise<ScrapeResult[]> => {
    const workers = await Promise.all(
      services.map(async (source): Promise<ScrapeResult> => {
        const m = await slots.get(source)?.collect(config.metricsScrapeTimeout)
        metrics.up.set({ service: source }, m ? 1 : 0)
        return { source, up: m !== undefined, metrics: m ?? [] }
      }),
    )
    return [
      { source: 'supervisor', up: true, metrics: await metrics.registry.getMetricsAsJSON() },
      ...workers,
    ]
  }
  for (const service of services) {
    const slot = createServiceSlot(service, {
      config,
      board,
      failpointCounters,
      log,
      ctx,
      metrics,
      wire: (h) => h.rpc.handle('scrape', scrape),
    })
    slots.set(service, slot)
    slot.spawn()
  }

  // The supervisor's own heartbeat (liveness) and memory recycling; each worker's watchdog runs
  // on its own timer in its slot.
  const tick = () => {
    const now = Date.now()
    board.beat('supervisor', now)
    for (const slot of slots.values()) slot.inspect(now)
  }
  tick()
  const ticker = setInterval(tick, HEARTBEAT_MS)

  // Start every service in order; once the run is cancelled, the rest are skipped.
  for (const service of services) {
    try {
      await failpoint(`supervisor.before-start:${service}`)
    } catch (err) {
      log.error({ event: 'service.start.failed', service, err }, `${service} failed to start`)
      ctx.cancel({ cause: 'start-failed', service, err })
    }
    if (ctx.signal.aborted) {
      log.info({ event: 'service.start.skipped', service }, `skipped ${service} start`)
      continue
    }
    log.info({ event: 'service.start.begin', service }, `starting ${service}`)
    const t0 = performance.now()
    try {
      await slots.get(service)!.start()
      log.info({ event: 'service.start.done', service, ms: elapsed(t0) }, `started ${service}`)
    } catch (err) {
      log.error({ event: 'service.start.failed', service, err }, `${service} failed to start`)
      ctx.cancel({ cause: 'start-failed', service, err })
    }
  }
  if (!ctx.signal.aborted) {
    board.setPhase('running')
    log.info({ event: 'supervisor.ready', services }, 'all services started')
  }

  // Wait until the run is cancelled: a signal, a start failure or a crash loop.
  const cause = await ctx.cancelled

  // Readiness is already 503. Let endpoint removal propagate, then stop every service, started
  // or not, in reverse order, each within its own deadline.
  await sleep(config.shutdownDelay)
  let unclean = false // a deadline missed, or a worker that died instead of stopping
  for (const [i, service] of [...services].reverse().entries()) {
    log.info({ event: 'service.shutdown.begin', service }, `stopping ${service}`)
    if (i === 0) await failpoint('supervisor.during-shutdown').catch((err) => log.error({ err }, 'failpoint'))
    const t0 = performance.now()
    const outcome = await slots.get(service)!.shutdown()
    if (outcome === 'timeout') {
      log.error({ event: 'service.shutdown.timeout', service }, `${service} missed its shutdown deadline`)
    }
    unclean ||= outcome !== 'done'
    log.info({ event: 'service.shutdown.done', service, ms: elapsed(t0) }, `stopped ${service}`)
  }
  clearInterval(ticker)

  const code = cause.cause === 'signal' && !unclean ? 0 : 1
  log.info({ event: 'supervisor.exit', code, cause: cause.cause }, `exiting with ${code}`)
  return code
}

function describe(cause: CancelCause): Record<string, unknown> {
  switch (cause.cause) {
    case 'signal':
      return { cause: 'signal', signal: cause.signal }
    case 'start-failed':
      return { cause: 'start-failed', service: cause.service, err: cause.err }
    case 'crash-loop':
      return { cause: 'crash-loop', service: cause.service }
  }
}

function elapsed(t0: number): number {
  return Math.round((performance.now() - t0) * 10) / 10
}
