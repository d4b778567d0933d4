import { setTimeout as sleep } from 'node:timers/promises'
import { monotonicMs } from '../shared/clock.js'
import type { Config } from '../shared/config/types.js'
import { codedError } from '../shared/errors.js'
import type { Logger } from '../shared/logger.js'
import type { ServiceName } from '../shared/services.js'
import { HEARTBEAT_MS, type StatusBoard } from '../shared/status-board.js'
import type { SupervisorMetrics } from './metrics.js'
import { holdPort, type PortHold } from './port-hold.js'
import type { RunContext } from './run-context.js'
import {
  initialModel,
  type ReplaceOutcome,
  type ReplaceReason,
  type SlotEffect,
  type SlotEvent,
  type SlotModel,
  type StartOutcome,
  type StopOutcome,
  step,
  TERMINATE_MS,
} from './slot-machine.js'
import type { WorkerExit, WorkerHandle } from './worker-handle.js'

/**
 * One service's place in the supervisor: runs the effects `slot-machine.ts` decides on against the
 * real worker thread, and turns what the thread does (answers, exit, deadlines) into its events.
 */
export interface ServiceSlot {
  readonly service: ServiceName
  /** Spawns the thread ahead of start, so module loading overlaps earlier services' starts. */
  spawn(): void
  /** Sends `start`; settles on the ack, an error, the thread's exit or the deadline. */
  start(): Promise<StartOutcome>
  /** Shuts the service down by `deadline` (epoch ms), whatever state it is in. */
  stop(deadline: number): Promise<StopOutcome>
  /** The run context was cancelled: a start in flight winds down; no restart begins. */
  cancel(): void
  /** The supervisor's tick: memory recycling. */
  tick(): void
  /**
   * Replaces the running worker with a fresh one: the successor listens beside it, then the
   * predecessor drains. Settles once that is decided. `config`: a reload's configuration, which
   * the successor runs on; the service keeps it only once a thread on it has started (a
   * successor that fails leaves the service on the one before, restarts included).
   */
  replace(reason: ReplaceReason, config?: Config): Promise<ReplaceOutcome>
}

export interface SlotDeps {
  /** The configuration at boot (a reload offers another: `replace`). */
  config: Config
  board: StatusBoard
  log: Logger
  ctx: RunContext
  metrics: SupervisorMetrics
  /** Spawns a new worker thread for this service, its supervisor handlers installed. */
  /**
   * `successor`: it replaces a worker that still serves; `config`: the one it runs on; `previous`:
   * the service's, when that is another (a reload's thread).
   */
  spawnWorker(service: ServiceName, successor: boolean, config: Config, previous?: Config): WorkerHandle
  /** A thread of this service could not be terminated. */
  onStuck(handle: WorkerHandle): void
  /** `handle` now serves this service (its start, or a successor's, was acknowledged). */
  onServing(handle: WorkerHandle): void
  /** Where the service listens (undefined: nowhere, or port 0, which no successor can share). */
  listenAddress(): string | undefined
}

/** The longest a Node timer can wait; control requests are bounded by the slot's own deadline. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * How a predecessor's drain ended: its clean answer, an answer that its tasks were cut short at
 * its deadline, an error answer, its thread's end, no answer by its deadline, or the final
 * stop's deadline first.
 */
type Drain =
  | { kind: 'clean' | 'cut-short' | 'deadline' | 'cut' }
  | { kind: 'error'; err: Error }
  | { kind: 'exit'; exit: WorkerExit }
  | { kind: 'blocked'; silentMs: number; watchdogTimeoutMs: number }

/**
 * Settles once `h` has left a `ping` unanswered for `watchdogMs`: its loop is blocked. The status
 * board's heartbeat of a replaced thread's service is its successor's, so the question is put to
 * the thread itself, once a heartbeat. The silence is judged after this thread has read its port
 * (a turn of its own loop past the timers): an answer that came while the supervisor's loop was
 * itself held up is not a silence. Never settles once `signal` aborts, or the thread has ended
 * (its exit says so).
 */
async function loopBlocked(h: WorkerHandle, watchdogMs: number, signal: AbortSignal): Promise<Drain> {
  let answeredAt = monotonicMs()
  let asking = false
  let ended = false
  while (!signal.aborted && !ended) {
    if (!asking) {
      asking = true
      h.rpc.request('ping', null, MAX_TIMER_MS).then(
        () => {
          answeredAt = monotonicMs()
          asking = false
        },
        () => {
          ended = true
        },
      )
    }
    await sleep(HEARTBEAT_MS, undefined, { signal, ref: false }).catch(() => {})
    await new Promise((r) => setImmediate(r))
    const silentMs = monotonicMs() - answeredAt
    if (asking && !ended && !signal.aborted && silentMs > watchdogMs)
      return { kind: 'blocked', silentMs, watchdogTimeoutMs: watchdogMs }
  }
  return new Promise<never>(() => {})
}

export function createServiceSlot(service: ServiceName, deps: SlotDeps): ServiceSlot {
  const { board, log, ctx, metrics } = deps
  let model: SlotModel = initialModel()
  /** The configuration the service runs on: the next restart's. */
  let config = deps.config
  /** A reload's, not yet run by a thread that started: the next successor's (or restart's). */
  let offered: Config | undefined
  /** Each thread's configuration. */
  const configOf = new WeakMap<WorkerHandle, Config>()
  /** Threads spawned to replace one that serves: their failed start is settle-replace's. */
  const successors = new WeakSet<WorkerHandle>()
  /** The worker the state machine follows. */
  let handle: WorkerHandle | undefined
  /** During a replacement: the worker that still serves while its successor starts. */
  let predecessor: WorkerHandle | undefined
  /**
   * Workers draining in the background after a replacement, each settling to whether it ended
   * clean. A stop waits for them, and cuts them at its own deadline (`cutRetiring`): a drain
   * begun before the shutdown is held to the shutdown's deadline as the current worker is.
   */
  const retiring = new Set<Promise<boolean>>()
  // Replaced threads that could not be terminated, however long before the shutdown: one still
  // up when the service stops is left behind by the process, so that stop is not clean.
  const leftStuck = new Set<WorkerHandle>()
  const cutRetiring = new AbortController()
  let settleReplace: ((o: ReplaceOutcome) => void) | undefined
  let timer: NodeJS.Timeout | undefined
  /** The worker last reported as serving (deps.onServing). */
  let serving: WorkerHandle | undefined
  let startedAt = 0
  let stopStartedAt = 0
  let settleStart: ((o: StartOutcome) => void) | undefined
  const stopWaiters: ((o: StopOutcome) => void)[] = []
  /** The port held from a worker's death until its successor serves (port-hold.ts). */
  let hold: Promise<PortHold | undefined> | undefined
  let heldAt = 0

  /**
   * Events that arise while a step's effects run (a spawn that failed): each is stepped once the
   * step before it is done (its effects run, its deadline armed), never in the middle of it.
   */
  const pending: SlotEvent[] = []
  let stepping = false

  function dispatch(ev: SlotEvent): void {
    pending.push(ev)
    if (stepping) return
    stepping = true
    try {
      for (let next = pending.shift(); next; next = pending.shift()) stepOnce(next)
    } finally {
      stepping = false
    }
  }

  function stepOnce(ev: SlotEvent): void {
    const sample = board.sample(service)
    const before = model.state
    const result = step(model, ev, {
      now: monotonicMs(),
      service,
      tuning: (offered ?? config).services[service],
      cancelled: ctx.signal.aborted,
      budgetEnd: ctx.budgetEnd(),
      heartbeatMs: sample.heartbeatMs,
      heapUsedBytes: sample.heapUsedBytes,
      heapLimitBytes: sample.heapLimitBytes,
    })
    model = result.model
    for (const effect of result.effects) run(effect)
    if (model.state !== before) arm()
    if (model.state.tag === 'running' && handle && handle !== serving) {
      serving = handle
      adopt(handle)
      deps.onServing(handle)
    }
  }

  /** A thread that serves makes its configuration the service's (a reload's, offered until then). */
  function adopt(h: WorkerHandle): void {
    const on = configOf.get(h)
    if (!on || on === config) return
    config = on
    if (on === offered) offered = undefined
  }

  /**
   * A restart on a reload's configuration (the reload met the service in back-off) whose thread
   * ended before it served: that configuration is dropped, and the next restart runs on the one
   * the service ran on; kept, it was a crash loop (exit 1) where the reload of a running service
   * would have kept the previous one (settle-replace). A shutdown's cancelled start is not its fault.
   * `on`: that thread's configuration (or the one a thread that could not be made was to run on).
   */
  function dropOfferOnFailedStart(on: Config | undefined): void {
    if (!offered || on !== offered || ctx.signal.aborted) return
    offered = undefined
    const err = codedError(
      'ERR_RELOAD_PARTIAL',
      `${service} did not start on the new configuration and restarts on the previous one`,
    )
    log.error({ event: 'supervisor.reload.failed', service, err }, err.message)
  }

  /** One timer per slot: the current state's deadline. */
  function arm(): void {
    clearTimeout(timer)
    timer = undefined
    const s = model.state
    if (!('until' in s)) return
    timer = setTimeout(
      () => dispatch({ type: 'deadline' }),
      Math.min(MAX_TIMER_MS, Math.max(0, s.until - monotonicMs())),
    )
    // The watchdog alone never keeps the process up.
    if (s.tag === 'running') timer.unref()
  }

  /** Answers from `h` count only while `h` is the current worker; its exit is its own event. */
  function fromWorker<T>(
    h: WorkerHandle,
    p: Promise<T>,
    ok: (v: T) => SlotEvent,
    fail: (e: Error) => SlotEvent,
  ) {
    p.then(
      (v) => h === handle && dispatch(ok(v)),
      (err: Error & { code?: string }) =>
        h === handle && err.code !== 'ERR_WORKER_EXITED' && dispatch(fail(err)),
    )
  }

  function spawn(successor = false): void {
    // A restart runs on the newest configuration (a reload that met the service in back-off), a
    // successor too; the service keeps it once a thread on it serves (adopt).
    const on = offered ?? config
    let h: WorkerHandle
    try {
      h = deps.spawnWorker(service, successor, on, on === config ? undefined : config)
    } catch (err) {
      // No thread to follow: what was asked of it (send-start) finds none; a successor's
      // predecessor stays the one restored. The machine takes it as that thread's end.
      handle = undefined
      // It was to run on the newest configuration (`on`), which did not start, as for a thread
      // that ended before it served: a successor's reload leaves this service on the previous
      // one (the reload says so: `failed`), a restart's is dropped and said so.
      if (successor) offered = undefined
      else dropOfferOnFailedStart(on)
      dispatch({ type: 'spawn-failed', err: err as Error })
      return
    }
    configOf.set(h, on)
    if (successor) successors.add(h)
    handle = h
    // Its last word: the worker blocks until its port is held (bounded on its side too).
    h.rpc.handle('dying', async () => {
      if (h === handle) dispatch({ type: 'dying' })
      else if (h === predecessor) dispatch({ type: 'predecessor-dying' })
      await hold
      h.releaseDeath()
      return null
    })
    void h.exited.then((exit) => {
      if (h === handle && h !== serving && !successors.has(h)) dropOfferOnFailedStart(configOf.get(h))
      if (h === handle) dispatch({ type: 'exit', exit })
      else if (h === predecessor) dispatch({ type: 'predecessor-exit', exit })
    })
  }

  /**
   * How the drain of a thread that is not the current one ended, said as a current worker's
   * shutdown says it (slot-machine.ts): its tasks not stopped in time (`service.shutdown.timeout`),
   * an error answer, or a thread that ended on its own; each with `predecessor: true` (replaced by
   * a successor) or `successor: true` (a successor called off, its predecessor kept). Only a clean
   * drain is silent.
   */
  function logDrain(drained: Drain, deadlineMs: number, role: 'predecessor' | 'successor'): void {
    const fields = { service, [role]: true }
    const thread = `${service}'s ${role === 'predecessor' ? 'previous' : 'new'} thread`
    switch (drained.kind) {
      case 'clean':
        return
      case 'cut-short':
        log.error(
          { event: 'service.shutdown.timeout', ...fields },
          `${thread} cut tasks short at its deadline`,
        )
        return
      case 'deadline':
        log.error(
          { event: 'service.shutdown.timeout', ...fields, deadlineMs },
          `${thread} did not drain within ${deadlineMs}ms; terminating`,
        )
        return
      case 'cut':
        log.error(
          { event: 'service.shutdown.timeout', ...fields },
          `${thread} was still draining at the shutdown deadline; terminating`,
        )
        return
      case 'error':
        log.error(
          { event: 'service.shutdown.failed', ...fields, err: drained.err },
          `${thread} answered its drain with an error`,
        )
        return
      case 'blocked':
        // For the status page's last error, as the running watchdog's kill is.
        metrics.noteCrash(service, { reason: 'watchdog', silentMs: drained.silentMs })
        log.error(
          {
            event: 'worker.watchdog',
            ...fields,
            silentMs: drained.silentMs,
            watchdogTimeoutMs: drained.watchdogTimeoutMs,
          },
          `${thread} stopped answering while it drained (its loop is blocked); terminating`,
        )
        return
      case 'exit':
        log.error(
          {
            event: 'worker.crashed',
            ...fields,
            reason: drained.exit.reason,
            exitCode: drained.exit.exitCode,
            err: drained.exit.err,
          },
          `${thread} died while it drained (${drained.exit.reason})`,
        )
        metrics.noteCrash(service, { ...drained.exit })
        return
    }
  }

  /**
   * Drains and stops a worker that no longer is the current one, in the background: `shutdown`
   * within `deadlineMs`, then terminate (a thread that will not end within TERMINATE_MS is stuck).
   */
  function retire(h: WorkerHandle, deadlineMs: number, replaced?: ReplaceReason): void {
    const from = monotonicMs()
    // One that died while its successor started was not replaced with an overlap: restarted.
    const overlapped = h.alive()
    const done = (async () => {
      let clean = true
      if (overlapped) {
        const answered = h.rpc.request('shutdown', { deadlineMs, replaced: true }, MAX_TIMER_MS).then(
          (report): Drain => ({ kind: report.timedOut ? 'cut-short' : 'clean' }),
          (err: Error & { code?: string }): Drain | Promise<Drain> =>
            err.code === 'ERR_WORKER_EXITED'
              ? h.exited.then((exit) => ({ kind: 'exit', exit }))
              : { kind: 'error', err },
        )
        const stopping = new AbortController()
        const signal = AbortSignal.any([cutRetiring.signal, stopping.signal])
        // A thread whose loop blocked cannot drain: ended once the watchdog's timeout says so,
        // not at the drain's deadline (30 s by default), its connections hanging meanwhile.
        const watchdogMs = (configOf.get(h) ?? config).services[service].watchdogTimeout
        const drained = await Promise.race([
          answered,
          // A predecessor only: a successor called off may still be loading its modules (no
          // watchdog watches a start; its start deadline does).
          replaced ? loopBlocked(h, watchdogMs, signal) : new Promise<Drain>(() => {}),
          h.exited.then((exit): Drain => ({ kind: 'exit', exit })),
          sleep(deadlineMs, { kind: 'deadline' } as Drain, { ref: false, signal }).catch(
            (): Drain => ({ kind: 'cut' }),
          ),
        ])
        stopping.abort() // the timer, and this drain's hold on cutRetiring, end here
        clean = drained.kind === 'clean'
        // The last shutdown of the service: a run's final one is rarely scraped (the metrics
        // service stops second to last), a replaced worker's drain is.
        metrics.shutdownSeconds.set({ service }, (monotonicMs() - from) / 1000)
        // A replaced thread has a reason; one without is a successor called off (restore-predecessor).
        logDrain(drained, deadlineMs, replaced ? 'predecessor' : 'successor')
        const ended = await Promise.race([
          h.terminate('recycled').then(() => true),
          sleep(TERMINATE_MS, false, { ref: false }),
        ])
        if (!ended) {
          log.error({ event: 'worker.stuck', service }, `${service} thread could not be terminated`)
          deps.onStuck(h)
          clean = false
          leftStuck.add(h)
        }
      }
      if (replaced) {
        const reason = overlapped ? replaced : 'restart'
        log.info(
          { event: 'worker.replaced', service, reason, overlapMs: overlapped ? monotonicMs() - from : 0 },
          `${service} replaced (${reason})`,
        )
      }
      return clean
    })()
    retiring.add(done)
    void done.finally(() => retiring.delete(done))
  }

  function run(e: SlotEffect): void {
    const h = handle
    switch (e.do) {
      case 'spawn':
        spawn()
        break
      case 'send-start':
        if (!h) break
        startedAt = performance.now()
        fromWorker(
          h,
          h.rpc.request('start', null, MAX_TIMER_MS),
          () => {
            metrics.startSeconds.set({ service }, (performance.now() - startedAt) / 1000)
            return { type: 'start-ack' }
          },
          (err) => ({ type: 'start-error', err }),
        )
        break
      case 'send-cancel':
        h?.rpc.request('cancel', null, MAX_TIMER_MS).catch(() => {})
        break
      case 'send-shutdown':
        if (!h) break
        stopStartedAt = performance.now()
        fromWorker(
          h,
          h.rpc.request('shutdown', { deadlineMs: e.deadlineMs, replaced: false }, MAX_TIMER_MS),
          (report) => ({ type: 'shutdown-ack', timedOut: report.timedOut }),
          (err) => ({ type: 'shutdown-error', err }),
        )
        break
      case 'terminate':
        // A kill that holds the port (the watchdog's) ends the thread once the supervisor listens
        // beside it: the connections queued unaccepted on the thread's listener then migrate to
        // the hold (net.ipv4.tcp_migrate_req=1) rather than being reset with no listener left.
        if (hold) void hold.then(() => h?.terminate(e.reason))
        else void h?.terminate(e.reason)
        break
      case 'log':
        log[e.level]({ event: e.event, service, ...e.fields }, e.msg)
        if (e.event === 'worker.crashed') metrics.noteCrash(service, e.fields)
        break
      case 'board':
        board.setState(service, e.state)
        break
      case 'count-restart':
        metrics.restarts.inc({ service, reason: e.reason })
        break
      case 'settle-start': {
        const settle = settleStart
        settleStart = undefined
        settle?.(e.outcome)
        break
      }
      case 'settle-stop':
        if (stopStartedAt)
          metrics.shutdownSeconds.set({ service }, (performance.now() - stopStartedAt) / 1000)
        for (const w of stopWaiters.splice(0)) w(e.outcome)
        break
      case 'escalate':
        ctx.cancel({ cause: 'crash-loop', service })
        break
      case 'stuck':
        if (!h) break
        deps.onStuck(h)
        // A thread that cannot be ended never exits (its exit would have dropped it): the restart
        // after it must not start on the same configuration.
        if (h !== serving && !successors.has(h)) dropOfferOnFailedStart(configOf.get(h))
        break
      case 'spawn-successor':
        predecessor = h
        spawn(true)
        break
      case 'terminate-predecessor':
        void predecessor?.terminate('watchdog')
        break
      case 'retire-predecessor': {
        const p = predecessor
        predecessor = undefined
        if (p) retire(p, e.deadlineMs, e.reason)
        break
      }
      case 'restore-predecessor':
        if (h && e.successor === 'terminate') void h.terminate('exception')
        else if (h) retire(h, e.deadlineMs)
        handle = predecessor
        predecessor = undefined
        break
      case 'settle-replace': {
        // Said while the successor is still the current thread. One on a reload's configuration
        // that failed drops it (a successor on the previous one, a recycle's, leaves a reload
        // deferred to it for its own successor); one that started serves and is adopted.
        if (h && e.outcome === 'failed' && configOf.get(h) === offered) offered = undefined
        const settle = settleReplace
        settleReplace = undefined
        settle?.(e.outcome)
        break
      }
      case 'hold-ports':
        hold = holdPorts()
        break
      case 'release-ports':
      case 'drop-ports': {
        const handedOver = e.do === 'release-ports'
        void hold?.then((held) => {
          if (!held) return
          log.info(
            {
              event: 'worker.port.released',
              service,
              connections: held.held(),
              heldMs: monotonicMs() - heldAt,
              handedOver,
            },
            handedOver ? `${service} successor took over its port` : `${service} port let go`,
          )
          if (handedOver) held.release()
          else held.drop()
        })
        hold = undefined
        break
      }
    }
  }

  /** Listens beside the dying worker; a port that cannot be held is logged and left alone. */
  async function holdPorts(): Promise<PortHold | undefined> {
    const address = deps.listenAddress()
    if (!address) return undefined
    heldAt = monotonicMs()
    try {
      // No more than the successor accepts: what it would evict, and the descriptors it would use.
      const held = await holdPort(address, { maxConnections: config.httpMaxConnections })
      log.info(
        { event: 'worker.port.held', service, address },
        `${service} port held until a successor serves`,
      )
      return held
    } catch (err) {
      log.warn(
        { event: 'worker.port.hold.failed', service, address, err },
        `${service} port could not be held`,
      )
      return undefined
    }
  }

  return {
    service,
    spawn() {
      if (!handle && model.state.tag === 'idle') spawn()
    },
    start() {
      // Not again for a service whose thread could not be made: its start fails (it is down).
      if (!handle && model.state.tag === 'idle') spawn()
      return new Promise((resolve) => {
        settleStart = resolve
        dispatch({ type: 'start' })
      })
    },
    async stop(deadline) {
      const outcome = await new Promise<StopOutcome>((resolve) => {
        stopWaiters.push(resolve)
        dispatch({ type: 'stop', deadline })
      })
      // Predecessors still draining end too, by this deadline at the latest.
      const cut = setTimeout(() => cutRetiring.abort(), Math.max(0, deadline - monotonicMs()))
      const drained = await Promise.race([
        Promise.all(retiring).then((clean) => clean.every(Boolean)),
        sleep(Math.max(0, deadline - monotonicMs()) + TERMINATE_MS, false, { ref: false }),
      ])
      clearTimeout(cut)
      if (outcome !== 'clean') return outcome
      return [...leftStuck].some((h) => h.alive()) ? 'stuck' : drained ? 'clean' : 'timeout'
    },
    replace(reason, next) {
      if (next) offered = next
      return new Promise((resolve) => {
        settleReplace = resolve
        dispatch({ type: 'replace', reason })
      })
    },
    cancel: () => dispatch({ type: 'cancel' }),
    tick: () => dispatch({ type: 'tick' }),
  }
}
