import type { Config } from '../shared/config/types.js'
import type { Logger } from '../shared/logger.js'
import type { MetricsJson } from '../shared/protocol.js'
import type { ServiceName } from '../shared/services.js'
import type { StatusBoard } from '../shared/status-board.js'
import type { SupervisorMetrics } from './metrics.js'
import { decideRestart } from './restart-policy.js'
import type { RunContext } from './run-context.js'
import { spawnWorker, type WorkerExit, type WorkerHandle } from './worker-handle.js'

export type ShutdownOutcome = 'done' | 'timeout' | 'crashed'

/**
 * One service's place in the supervisor: the current worker thread, its start and shutdown with
 * deadlines, and what happens when it dies on its own (restart, stay down, or escalate).
 */
export interface ServiceSlot {
  readonly service: ServiceName
  /** Spawns the thread ahead of start, so module loading overlaps earlier services' starts. */
  spawn(): void
  /** Sends `start`; rejects on error, crash or deadline. */
  start(): Promise<void>
  shutdown(): Promise<ShutdownOutcome>
  /** This worker's registry, or undefined when it is down or does not answer in time. */
  collect(timeoutMs: number): Promise<MetricsJson | undefined>
  /** Called every supervisor tick: memory recycling. */
  inspect(now: number): void
}

export interface SlotDeps {
  config: Config
  board: StatusBoard
  failpointCounters: SharedArrayBuffer
  log: Logger
  ctx: RunContext
  metrics: SupervisorMetrics
  /** Installs the supervisor's request handlers on a new worker's control channel. */
  wire(handle: WorkerHandle): void
}

export function createServiceSlot(service: ServiceName, deps: SlotDeps): ServiceSlot {
  const { config, board, log, ctx, metrics } = deps
  const tuning = config.services[service]
  let handle: WorkerHandle | undefined
  /** Started and acknowledged, not being recycled: an exit now is a fault, not a start failure. */
  let running = false
  let stopping = false
  /** It crashed after the run was cancelled, before its own turn to stop: shutdown was not clean. */
  let crashedWhileEnding = false
  let restartTimer: NodeJS.Timeout | undefined
  let watchdogTimer: NodeJS.Timeout | undefined
  /** A restart's start or a recycle in progress; shutdown waits for it (each has a deadline). */
  let transition: Promise<void> | undefined
  let lastRecycle = Number.NEGATIVE_INFINITY
  let recycleHeldLogged = false
  /** Times of the faults that count toward the restart intensity. */
  const history: number[] = []

  function spawn(): WorkerHandle {
    const h = spawnWorker(service, { config, board: board.buffer, failpointCounters: deps.failpointCounters })
    deps.wire(h)
    void h.exited.then((exit) => onExit(h, exit))
    handle = h
    return h
  }

  async function sendStart(h: WorkerHandle): Promise<void> {
    const t0 = performance.now()
    await h.rpc.request('start', null, tuning.startTimeout)
    metrics.startSeconds.set({ service }, (performance.now() - t0) / 1000)
  }

  function track(p: Promise<void>): void {
    transition = p
    void p.finally(() => {
      if (transition === p) transition = undefined
    })
  }

  function nowRunning(h: WorkerHandle): void {
    running = true
    board.setState(service, 'running')
    metrics.up.set({ service }, 1)
    armWatchdog(tuning.watchdogTimeout)
    // It acknowledged and then died before we got here (its exit was ignored as not yet
    // running): handle that exit now, as the crash it is.
    if (!h.alive()) void h.exited.then((exit) => onExit(h, exit))
  }

  // The watchdog reads the heartbeat the worker writes to the status board every second. It runs
  // on its own timer, due the moment the last beat turns `watchdogTimeout` old, so a blocked
  // worker is caught within watchdogTimeout of its last beat, not a supervisor tick later.
  function armWatchdog(inMs: number): void {
    clearTimeout(watchdogTimer)
    watchdogTimer = setTimeout(checkHeartbeat, inMs)
    watchdogTimer.unref()
  }

  function checkHeartbeat(): void {
    const h = handle
    if (!running || stopping || !h) return
    const silentMs = Date.now() - board.sample(service).heartbeatMs
    if (silentMs <= tuning.watchdogTimeout) {
      armWatchdog(tuning.watchdogTimeout - silentMs + 1)
      return
    }
    // No heap snapshot here: V8 takes one on the worker's own thread, which is the one blocked.
    log.error(
      { event: 'worker.watchdog', service, silentMs, watchdogTimeoutMs: tuning.watchdogTimeout },
      `${service} heartbeat silent for ${silentMs}ms; terminating`,
    )
    void h.terminate('watchdog') // its exit is handled as a fault by onExit
  }

  function onExit(h: WorkerHandle, exit: WorkerExit): void {
    // Ignored when replaced, shutting down, being recycled (recycle() handles it) or not yet
    // started (a start failure, reported by start()).
    if (h !== handle || stopping || !running) return
    running = false
    afterExit(exit)
  }

  /** A running worker has ended on its own or been recycled: restart, stay down, or escalate. */
  function afterExit(exit: WorkerExit): void {
    clearTimeout(watchdogTimer)
    metrics.up.set({ service }, 0)
    const level = exit.reason === 'recycled' ? 'info' : 'error'
    log[level](
      { event: 'worker.crashed', service, reason: exit.reason, exitCode: exit.exitCode, err: exit.err },
      `${service} worker ended (${exit.reason})`,
    )
    if (stopping || ctx.signal.aborted) {
      crashedWhileEnding ||= exit.reason !== 'recycled'
      board.setState(service, 'down')
      return
    }
    const now = Date.now()
    const decision = decideRestart(tuning, exit, history, now)
    if (decision.action === 'stay-down') {
      board.setState(service, 'down')
      log.warn(
        { event: 'worker.down', service, reason: exit.reason, restart: tuning.restart },
        `${service} stays down (restart: ${tuning.restart})`,
      )
      return
    }
    if (decision.action === 'escalate') {
      board.setState(service, 'down')
      log.error(
        {
          event: 'worker.crash-loop',
          service,
          maxRestarts: tuning.maxRestarts,
          restartWindowMs: tuning.restartWindow,
        },
        `${service} crashed more than ${tuning.maxRestarts} times in ${tuning.restartWindow}ms`,
      )
      ctx.cancel({ cause: 'crash-loop', service })
      return
    }
    if (exit.reason !== 'recycled') history.push(now)
    board.setState(service, 'restarting')
    metrics.restarts.inc({ service, reason: exit.reason })
    log.warn(
      {
        event: 'worker.restarting',
        service,
        reason: exit.reason,
        attempt: decision.attempt,
        delayMs: decision.delayMs,
      },
      `restarting ${service} in ${decision.delayMs}ms (attempt ${decision.attempt})`,
    )
    restartTimer = setTimeout(() => {
      restartTimer = undefined
      track(restart())
    }, decision.delayMs)
  }

  // A fresh thread with a fresh control channel; whoever talks to this service (the metrics
  // scrape, the board's readers) reaches the new worker through this slot without restarting.
  async function restart(): Promise<void> {
    if (stopping || ctx.signal.aborted) return // the run is ending: its shutdown finds it down
    const h = spawn()
    try {
      await sendStart(h)
    } catch (err) {
      if (stopping || h !== handle) return
      // A restart that cannot start is one more fault of the same worker.
      log.error({ event: 'service.start.failed', service, err }, `${service} failed to restart`)
      const exit = h.alive() ? await h.terminate('exception') : await h.exited
      afterExit({ ...exit, err: exit.err ?? (err as Error) })
      return
    }
    if (stopping) return
    nowRunning(h)
    log.info({ event: 'worker.restarted', service }, `${service} restarted`)
  }

  // Planned, before V8 kills the worker: shutdown first, so in-flight work completes, then a
  // fresh worker at once. At most once per restartWindow: a worker already over the threshold
  // right after a recycle is left to its heap limit (oom), which the restart policy bounds.
  async function recycle(h: WorkerHandle, usedBytes: number, limitBytes: number): Promise<void> {
    running = false
    lastRecycle = Date.now()
    clearTimeout(watchdogTimer)
    board.setState(service, 'restarting')
    log.warn(
      {
        event: 'worker.recycling',
        service,
        heapUsedBytes: usedBytes,
        heapLimitBytes: limitBytes,
        recycleAtPercent: tuning.recycleAtPercent,
      },
      `${service} heap above ${tuning.recycleAtPercent}% of its limit: recycling`,
    )
    try {
      await h.rpc.request('shutdown', { deadlineMs: tuning.shutdownTimeout }, tuning.shutdownTimeout)
    } catch (err) {
      log.error({ event: 'worker.recycle.failed', service, err }, `${service} did not shut down cleanly`)
    }
    // A worker that died during its shutdown reports that fault, not `recycled`.
    afterExit(await h.terminate('recycled'))
  }

  return {
    service,
    spawn() {
      handle ??= spawn()
    },
    async start() {
      board.setState(service, 'starting')
      const h = handle ?? spawn()
      try {
        await sendStart(h)
      } catch (err) {
        board.setState(service, 'failed')
        throw err
      }
      nowRunning(h)
    },
    async shutdown() {
      stopping = true
      clearTimeout(restartTimer)
      clearTimeout(watchdogTimer)
      await transition
      board.setState(service, 'stopping')
      const h = handle
      if (!h?.alive()) {
        board.setState(service, 'stopped')
        return crashedWhileEnding ? 'crashed' : 'done'
      }
      const t0 = performance.now()
      try {
        const report = await h.rpc.request(
          'shutdown',
          { deadlineMs: tuning.shutdownTimeout },
          tuning.shutdownTimeout,
        )
        await h.terminate('terminated') // acknowledged: nothing is left running in it
        return report.timedOut ? 'timeout' : 'done'
      } catch (err) {
        if ((err as { code?: string }).code === 'ERR_RPC_TIMEOUT') {
          await h.terminate('terminated')
          return 'timeout'
        }
        // It died before acknowledging: its shutdown is over, but not cleanly (exit code 1).
        const exit = await h.exited
        log.error(
          { event: 'worker.crashed', service, reason: exit.reason, exitCode: exit.exitCode, err: exit.err },
          `${service} worker crashed during shutdown`,
        )
        return 'crashed'
      } finally {
        running = false
        board.setState(service, 'stopped')
        metrics.shutdownSeconds.set({ service }, (performance.now() - t0) / 1000)
      }
    },
    async collect(timeoutMs) {
      if (!running || !handle?.alive()) return undefined
      try {
        return await handle.rpc.request('collect', null, timeoutMs)
      } catch {
        return undefined
      }
    },
    inspect(now) {
      const h = handle
      if (!running || stopping || !h) return
      const { heapUsedBytes, heapLimitBytes } = board.sample(service)
      if (heapLimitBytes <= 0 || heapUsedBytes / heapLimitBytes < tuning.recycleAtPercent / 100) return
      if (now - lastRecycle < tuning.restartWindow) {
        if (!recycleHeldLogged)
          log.warn(
            { event: 'worker.recycle.held', service, heapUsedBytes, heapLimitBytes },
            `${service} is over its recycling threshold again within restartWindow; not recycling`,
          )
        recycleHeldLogged = true
        return
      }
      recycleHeldLogged = false
      track(recycle(h, heapUsedBytes, heapLimitBytes))
    },
  }
}
