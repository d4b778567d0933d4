import { setTimeout as sleep } from 'node:timers/promises'
import { parseAddress } from '../shared/address.js'
import { monotonicMs } from '../shared/clock.js'
import { ADDRESS_OF } from '../shared/config/addresses.js'
import { envName } from '../shared/config/settings.js'
import type { Config } from '../shared/config/types.js'
import { codedError } from '../shared/errors.js'
import { createFailpointCounters, createFailpoints, parseFailpoints } from '../shared/failpoints.js'
import type { Logger } from '../shared/logger.js'
import { SERVICES, type ServiceName } from '../shared/services.js'
import { createStatusBoard, HEARTBEAT_MS } from '../shared/status-board.js'
import { createProcessExit, type ProcessExit } from './exit.js'
import { createSupervisorMetrics } from './metrics.js'
import { createPortBroker } from './port-broker.js'
import { claimPort } from './port-claim.js'
import type { Prespawned } from './prespawn.js'
import { type CancelCause, createRunContext } from './run-context.js'
import { createServiceSlot, type ServiceSlot } from './service-slot.js'
import type { SignalRouter } from './signals.js'
import { TERMINATE_PAST_BUDGET_MS } from './slot-machine.js'
import { spawnWorker } from './worker-handle.js'

/**
 * How long past the shutdown budget the process may take to be out: the contract's second to end
 * threads, less what hardExit takes once the last line is out (a Node that only exits: tens of ms).
 */
const OUT_PAST_BUDGET_MS = 900

/**
 * The supervisor's whole run, in the order of the seed's sequence diagram (DESIGN.md §1).
 * This is the file that answers "what happens on SIGTERM".
 */
export async function run(
  boot: Config,
  log: Logger,
  signals: SignalRouter,
  /** The configuration as the files say now; `warn` logs what it warns of, once it is taken. */
  reread: () => Promise<{ config: Config; warn(): void }>,
  prespawned?: Prespawned,
): Promise<never> {
  let config = boot // SIGHUP replaces it
  const board = createStatusBoard()
  const services = SERVICES.filter((s) => config.services[s].enabled)
  const metrics = createSupervisorMetrics(board, services, () => config)
  const failpointSpecs = parseFailpoints(config.failpoints)
  const failpointCounters = createFailpointCounters(failpointSpecs)
  const failpoint = createFailpoints(failpointSpecs, { board, counters: failpointCounters })
  const slots = new Map<ServiceName, ServiceSlot>()
  const exit = createProcessExit(log, { outBy: () => ctx.budgetEnd() + OUT_PAST_BUDGET_MS })

  // The run context: the first cause wins. At that instant readiness drops (503 for the whole of
  // shutdown), the one shutdown budget starts, every start in flight is told to wind down, and
  // no restart begins any more.
  const budgetMs = config.shutdownDelay + config.shutdownTimeout
  const ctx = createRunContext(budgetMs, (cause) => {
    board.setPhase('shutting-down')
    log.info({ event: 'supervisor.cancelled', ...describe(cause) }, `shutting down: ${cause.cause}`)
    for (const slot of slots.values()) slot.cancel()
    armBudgetWatchdog(budgetMs, exit)
  })

  // SIGINT/SIGTERM cancel the run; any later one, and any other signal, is logged and changes nothing.
  signals.attach({
    stop(signal) {
      if (!ctx.cancel({ cause: 'signal', signal })) {
        log.info({ event: 'supervisor.signal.ignored', signal }, `ignoring ${signal}: already shutting down`)
      }
      board.registerSignal() // after the cancel: a failpoint waiting on it sees the cancelled context
    },
    reload: () => void reload(),
    other: (signal) => log.info({ event: 'supervisor.signal.ignored', signal }, `ignoring ${signal}`),
  })

  // SIGHUP: re-read the config file and the secret files; if valid, replace every worker, one at
  // a time in start order, each successor listening before its predecessor drains. Readiness
  // stays 200 throughout. An invalid configuration changes nothing.
  let reloading = false
  // A SIGHUP during boot or during a reload may follow an edit made after the file was read:
  // one more reload runs once that ends (however many came meanwhile).
  let reloadQueued = false
  const runQueuedReload = () => {
    if (!reloadQueued || reloading || board.phase() !== 'running') return
    reloadQueued = false
    void reload()
  }
  async function reload(): Promise<void> {
    if (ctx.signal.aborted) {
      log.info({ event: 'supervisor.signal.ignored', signal: 'SIGHUP' }, 'ignoring SIGHUP: shutting down')
      return
    }
    if (reloading || board.phase() !== 'running') {
      if (!reloadQueued) {
        log.info(
          { event: 'supervisor.reload.queued', during: reloading ? 'reload' : 'boot' },
          'SIGHUP: reloading once the current reload or the boot ends',
        )
      }
      reloadQueued = true
      return
    }
    reloading = true
    log.info({ event: 'supervisor.reload' }, 'reloading the configuration')
    try {
      const { config: next, warn } = await reread()
      const fixed = fixedSettings(config, next)
      if (fixed.length) throw codedError('ERR_RELOAD', `${fixed.join(', ')} can change only with a restart`)
      warn()
      config = next
      log.level = next.logLevel // the workers' with their replacement
      // A list, not a map keyed by service: a key named `token` would be caught by log redaction.
      const outcomes: { service: ServiceName; outcome: string }[] = []
      // A shutdown in the middle cancels the rest: each service is named, none left out.
      for (const service of services) {
        const outcome = ctx.signal.aborted ? 'cancelled' : await slots.get(service)!.replace('reload', next)
        outcomes.push({ service, outcome })
      }
      const failed = outcomes.filter((o) => o.outcome === 'failed').map((o) => o.service)
      if (failed.length === 0) log.info({ event: 'supervisor.reload.done', outcomes }, 'reloaded')
      else {
        // Each of those keeps its worker and that worker's configuration, restarts included.
        const err = codedError(
          'ERR_RELOAD_PARTIAL',
          `${failed.join(', ')} did not start on the new configuration and keep the previous one`,
        )
        log.error({ event: 'supervisor.reload.failed', outcomes, err }, err.message)
      }
    } catch (err) {
      log.error({ event: 'supervisor.reload.failed', err }, 'reload failed; nothing changed')
    } finally {
      reloading = false
      runQueuedReload()
    }
  }

  // Service ports: the supervisor wires the links; its own registry is one of the targets.
  const broker = createPortBroker(
    {
      collect: (view, answerBy) => metrics.collect(view === true, answerBy),
      lastErrors: () => metrics.lastErrors(),
    },
    log,
  )
  // Each port is this process's before any worker binds it: another sidecar on the same ports
  // would otherwise share them (port-claim.ts). A claim lasts as long as the process.
  const unclaimed = new Set<ServiceName>()
  for (const service of services) {
    const address = listenAddressOf(service, config)
    if (ctx.signal.aborted || address === undefined) continue
    try {
      await claimPort(parseAddress(address).port, envName(ADDRESS_OF[service]!))
    } catch (err) {
      log.error({ event: 'service.start.failed', service, err }, `${service} failed to start`)
      ctx.cancel({ cause: 'start-failed', service, err })
      unclaimed.add(service)
    }
  }
  for (const service of services) {
    const slot = createServiceSlot(service, {
      config,
      board,
      log,
      ctx,
      metrics,
      spawnWorker(s, successor, on, previous) {
        const h = spawnWorker(s, {
          config: on,
          previous,
          board: board.buffer,
          failpointCounters,
          prespawned,
          successor,
        })
        broker.attach(s, h)
        exit.threads.add(h)
        void h.exited.then(() => {
          exit.threads.delete(h)
          broker.exited(s, h)
        })
        return h
      },
      onStuck: exit.stuck,
      onServing: (h) => broker.serving(service, h),
      listenAddress: () => listenAddressOf(service, config),
    })
    slots.set(service, slot)
    slot.spawn()
  }
  prespawned?.discard() // the threads of disabled services

  // The supervisor's own heartbeat (liveness) and memory recycling; each worker's watchdog runs
  // on its own deadline in its slot.
  const tick = () => {
    board.beat('supervisor')
    for (const slot of slots.values()) slot.tick()
  }
  tick()
  const ticker = setInterval(tick, HEARTBEAT_MS)

  // Start every service in order; once the run is cancelled, the rest are skipped. A start in
  // flight at that moment finishes (or is cut at its deadline): "finish the whole code block".
  const skipped = (service: ServiceName) => {
    // One whose port could not be claimed has failed already (logged once): not also skipped.
    if (!unclaimed.has(service))
      log.info({ event: 'service.start.skipped', service }, `skipped ${service} start`)
  }
  for (const service of services) {
    // Its failpoint strikes just before a start is sent: a service skipped is sent none.
    if (ctx.signal.aborted) {
      skipped(service)
      continue
    }
    try {
      await untilCancelled(failpoint(`supervisor.before-start:${service}`), ctx.cancelled)
    } catch (err) {
      // Its start failed (logged once): not also skipped.
      log.error({ event: 'service.start.failed', service, err }, `${service} failed to start`)
      ctx.cancel({ cause: 'start-failed', service, err })
      continue
    }
    if (ctx.signal.aborted) {
      skipped(service)
      continue
    }
    log.info({ event: 'service.start.begin', service }, `starting ${service}`)
    const t0 = performance.now()
    const started = await slots.get(service)!.start()
    if (started.result === 'started') {
      log.info({ event: 'service.start.done', service, ms: elapsed(t0) }, `started ${service}`)
    } else if (started.result === 'cancelled') {
      log.info(
        { event: 'service.start.cancelled', service, err: started.err },
        `${service} start ended by the shutdown`,
      )
    } else {
      log.error({ event: 'service.start.failed', service, err: started.err }, `${service} failed to start`)
      ctx.cancel({ cause: 'start-failed', service, err: started.err })
    }
  }
  if (!ctx.signal.aborted) {
    board.setPhase('running')
    log.info({ event: 'supervisor.ready', services }, 'all services started')
    runQueuedReload()
  }

  // Wait until the run is cancelled: a signal, a start failure or a crash loop.
  const cause = await ctx.cancelled

  // Readiness is already 503. Let endpoint removal propagate, then stop every service, started
  // or not, in reverse order, each by min(its own deadline, what is left of the budget).
  await sleep(Math.max(0, ctx.budgetEnd() - config.shutdownTimeout - monotonicMs()))
  let unclean = false
  for (const [i, service] of [...services].reverse().entries()) {
    log.info({ event: 'service.shutdown.begin', service }, `stopping ${service}`)
    if (i === 0) {
      await untilBudgetEnds(failpoint('supervisor.during-shutdown'), ctx.budgetEnd()).catch((err: unknown) =>
        log.error({ event: 'failpoint.error', err }, 'failpoint'),
      )
    }
    const t0 = performance.now()
    const deadline = Math.min(monotonicMs() + config.services[service].shutdownTimeout, ctx.budgetEnd())
    const outcome = await slots.get(service)!.stop(deadline)
    unclean ||= outcome !== 'clean'
    log.info({ event: 'service.shutdown.done', service, outcome, ms: elapsed(t0) }, `stopped ${service}`)
  }
  clearInterval(ticker)

  return exit.leave(cause.cause === 'signal' && !unclean ? 0 : 1, { cause: cause.cause })
}

/**
 * The last line of defence of the budget: whatever is still waiting (a bug, a failpoint that never
 * returns), the process is out by the budget plus the second it has to end threads. The budget
 * and that second fit in a timer (shared/config/deadlines.ts).
 */
function armBudgetWatchdog(budgetMs: number, exit: ProcessExit): void {
  setTimeout(() => void exit.leave(1, { cause: 'budget-exceeded' }), budgetMs + TERMINATE_PAST_BUDGET_MS + 50)
}

/** A supervisor-side failpoint that hangs must not hold the start loop once the run is cancelled. */
function untilCancelled(p: Promise<void>, cancelled: Promise<unknown>): Promise<void> {
  return Promise.race([p, cancelled.then(() => {})])
}

function untilBudgetEnds(p: Promise<void>, end: number): Promise<void> {
  const ac = new AbortController()
  return Promise.race([
    p,
    sleep(Math.max(0, end - monotonicMs()), undefined, { signal: ac.signal }).catch(() => {}),
  ]).finally(() => ac.abort())
}

/** A port a successor can share (SO_REUSEPORT): port 0 gives each worker a port of its own. */
function listenAddressOf(service: ServiceName, config: Config): string | undefined {
  const key = ADDRESS_OF[service]
  const address = key ? config[key] : undefined
  if (typeof address !== 'string' || address === '') return undefined
  return parseAddress(address).port === 0 ? undefined : address
}

/** What a running process cannot change in place: which services run, where, and the budget. */
function fixedSettings(now: Config, next: Config): string[] {
  const keys = [
    // Before the address it empties (USE_TOKEN_SERVER=false is no token server): the one changed.
    'useTokenServer',
    'tokenServerAddr',
    'gatewayAddr',
    'metricsServerAddr',
    'healthCheckAddr',
    // The kubelet's probes name the path as they name the port: a new one is a 404, and a restart.
    'healthCheckEndpoint',
    'shutdownDelay',
    'shutdownTimeout',
    // init runs once on the main thread and exits: no worker to replace into it.
    'mode',
    // The supervisor's log file is opened once, named after the level.
    'logDir',
    // The failpoints' hit counters are shared by every thread, sized for the boot's list, and
    // the supervisor's own failpoints are read once.
    'failpoints',
    ...(now.logDir ? (['logLevel'] as const) : []),
  ] as const
  const changed: string[] = keys.filter((k) => now[k] !== next[k])
  for (const s of SERVICES)
    if (now.services[s].enabled !== next.services[s].enabled) changed.push(`services.${s}.enabled`)
  return changed
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
