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
  /** Called every heartbeat by the supervisor: watchdog and memory recycling. */
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
  let running = false // started and acknowledged: an exit now is a crash, not a start failure
  let stopping = false
  let restartTimer: NodeJS.Timeout | undefined
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

  function onExit(h: WorkerHandle, exit: WorkerExit): void {
    if (h !== handle || stopping || !running) return // replaced, shutting down, or a start failure
    running = false
    metrics.up.set({ service }, 0)
    metrics.restarts.inc({ service, reason: exit.reason })
    log.error(
      { event: 'worker.crashed', service, reason: exit.reason, exitCode: exit.exitCode, err: exit.err },
      `${service} worker crashed (${exit.reason})`,
    )
    const decision = decideRestart(tuning, exit, history, Date.now())
    if (decision.action === 'stay-down' || ctx.signal.aborted) {
      board.setState(service, 'down')
      return
    }
    if (decision.action === 'escalate') {
      board.setState(service, 'down')
      ctx.cancel({ cause: 'crash-loop', service })
      return
    }
    if (exit.reason !== 'recycled') history.push(Date.now())
    board.setState(service, 'restarting')
    log.warn(
      {
        event: 'worker.restarting',
        service,
        attempt: decision.attempt,
        delayMs: decision.delayMs,
        reason: exit.reason,
      },
      `restarting ${service} in ${decision.delayMs}ms`,
    )
    restartTimer = setTimeout(restart, decision.delayMs)
  }

  async function restart(): Promise<void> {
    restartTimer = undefined
    if (stopping) return
    const h = spawn()
    try {
      await sendStart(h)
      if (stopping) return
      running = true
      board.setState(service, 'running')
      log.info({ event: 'worker.restarted', service }, `${service} restarted`)
    } catch (err) {
      if (stopping || h !== handle) return
      // A restart that cannot start is one more crash of the same worker.
      log.error({ event: 'service.start.failed', service, err }, `${service} failed to restart`)
      running = true
      if (h.alive())
        void h.terminate('exception') // its exit runs onExit
      else onExit(h, await h.exited)
    }
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
      running = true
      board.setState(service, 'running')
      metrics.up.set({ service }, 1)
    },
    async shutdown() {
      stopping = true
      clearTimeout(restartTimer)
      board.setState(service, 'stopping')
      const h = handle
      if (!h?.alive()) {
        board.setState(service, 'stopped')
        return 'done'
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
        const exit = await h.exited
        log.error(
          { event: 'worker.crashed', service, reason: exit.reason, exitCode: exit.exitCode, err: exit.err },
          `${service} worker crashed during shutdown`,
        )
        return 'crashed'
      } finally {
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
      const sample = board.sample(service)
      if (now - sample.heartbeatMs > tuning.watchdogTimeout) {
        log.error(
          { event: 'worker.watchdog', service, silentMs: now - sample.heartbeatMs },
          `${service} heartbeat stopped; terminating`,
        )
        void h.terminate('watchdog')
        return
      }
      if (
        sample.heapLimitBytes > 0 &&
        sample.heapUsedBytes / sample.heapLimitBytes >= tuning.recycleAtPercent / 100
      ) {
        log.warn(
          {
            event: 'worker.recycling',
            service,
            heapUsedBytes: sample.heapUsedBytes,
            heapLimitBytes: sample.heapLimitBytes,
          },
          `${service} heap above ${tuning.recycleAtPercent}%: recycling`,
        )
        running = false
        board.setState(service, 'restarting')
        void h.rpc
          .request('shutdown', { deadlineMs: tuning.shutdownTimeout }, tuning.shutdownTimeout)
          .catch(() => undefined)
          .then(() => {
            running = true // so the exit below is handled as this worker's end
            return h.terminate('recycled')
          })
      }
    },
  }
}
