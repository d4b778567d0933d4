import type { ServiceTuning } from '../shared/config/types.js'
import { codedError } from '../shared/errors.js'
import type { ServiceState } from '../shared/status-board.js'
import { decideRestart } from './restart-policy.js'
import type { ExitReason, WorkerExit } from './worker-handle.js'

/**
 * One service's life as a single value moved by one pure function: `step(model, event, env)`
 * returns the next model and the effects to carry out (send, terminate, log…). Every state names
 * what it waits for, and `until` is the one deadline that ends the wait (a `deadline` event).
 * `service-slot.ts` runs the effects against a real worker; the tests run this without threads.
 */

/** How a service's shutdown ended; anything but `clean` makes the exit code 1. */
export type StopOutcome = 'clean' | 'timeout' | 'error' | 'crashed' | 'stuck'

export type ReplaceReason = 'recycle' | 'reload'

/** `deferred`: the thread is starting on the previous configuration, and is replaced once up. */
/** `cancelled`: the shutdown began while the successor started (the reload is not finished). */
export type ReplaceOutcome = 'replaced' | 'failed' | 'skipped' | 'deferred' | 'cancelled'

/** How the boot start ended, for the run loop. */
export type StartOutcome =
  | { result: 'started' }
  | { result: 'failed'; err: Error }
  /** The run was cancelled while it started, and the start did not complete. */
  | { result: 'cancelled'; err: Error }

export type SlotState =
  /** A thread is up (loading modules or done with a failed start); waits for start or stop. */
  | { tag: 'idle'; board: 'idle' | 'failed' }
  /** `start` sent; waits for its answer, the thread's exit, or `until`. */
  | { tag: 'starting'; boot: boolean; until: number }
  /** Acknowledged; `until` is when the watchdog next reads the heartbeat. */
  | { tag: 'running'; until: number }
  /**
   * The worker announced an uncaught exception and is ending; its port is held meanwhile (the
   * supervisor listens beside it). Waits for the exit, or `until` (then it is terminated).
   */
  | { tag: 'dying'; until: number }
  /** No thread; a restart is due at `until`. */
  | { tag: 'backoff'; until: number }
  /**
   * A successor is starting (to recycle a worker over its heap threshold, or for a reload) while
   * its predecessor keeps serving; `startUntil` bounds the successor's start, and `until` is the
   * sooner of that and when the watchdog next reads the predecessor's heartbeat. Once the
   * successor is up, the predecessor drains and stops in the background: no connection is
   * refused in between.
   */
  | {
      tag: 'replacing'
      reason: ReplaceReason
      startUntil: number
      until: number
      /**
       * The predecessor is ending (its port is held): it announced an uncaught exception
       * (`exception`), or its watchdog ended it (`watchdog`)…
       */
      predecessorDying?: 'exception' | 'watchdog'
      /** …or has ended. */
      predecessorExit?: WorkerExit
    }
  /** `shutdown` sent for the run's end; waits for the ack, the exit, or `until`. */
  | { tag: 'stopping'; until: number }
  /**
   * `terminate()` called; waits for the exit or `until` (a thread that cannot be ended). Then:
   * `stop` ends the slot with `outcome`; `fault` goes to the restart policy; `fault-stop`, a
   * fault that a stop came to wait for, logs the crash and ends the slot with `outcome`.
   * `full`: the wait is the whole TERMINATE_MS, not what the budget left of it; a thread that
   * outlives a shorter one is not known to be stuck (the exit's last wait says which are).
   */
  | {
      tag: 'terminating'
      after: 'stop' | 'fault' | 'fault-stop'
      outcome: StopOutcome
      until: number
      full: boolean
      faultAfterCancel: boolean
    }
  /** No thread, none coming until the run ends; `outcome` is what its stop will report. */
  | { tag: 'down'; outcome: StopOutcome; exit?: WorkerExit }
  | { tag: 'stopped'; outcome: StopOutcome }

export interface SlotModel {
  state: SlotState
  /** Times of the faults that count toward the restart intensity. */
  faults: readonly number[]
  lastRecycleAt: number
  /** `worker.recycle.held` was logged for the current episode. */
  recycleHeld: boolean
  /**
   * The supervisor holds the service's port (accepts and parks connections) from a worker's
   * death until its successor serves: a crash refuses no connection (DESIGN.md §8).
   */
  holding: boolean
  /**
   * A reload asked while this thread was starting (a restart's, a recycle's successor), which was
   * spawned on the configuration before it: it is replaced at the first tick once it is up.
   */
  replaceDue?: ReplaceReason
}

export type SlotEvent =
  | { type: 'start' }
  | { type: 'start-ack' }
  | { type: 'start-error'; err: Error }
  | { type: 'shutdown-ack'; timedOut: boolean }
  | { type: 'shutdown-error'; err: Error }
  | { type: 'exit'; exit: WorkerExit }
  /** The thread a `spawn` or `spawn-successor` asked for could not be made (`new Worker()` threw). */
  | { type: 'spawn-failed'; err: Error }
  | { type: 'deadline' }
  /** The run context was cancelled. */
  | { type: 'cancel' }
  /** The run loop stops this service; it must be over by `deadline` (epoch ms). */
  | { type: 'stop'; deadline: number }
  /** The supervisor's heartbeat tick: memory recycling. */
  | { type: 'tick' }
  /** Replace the running worker with a fresh one (SIGHUP reload). */
  | { type: 'replace'; reason: ReplaceReason }
  /** The predecessor of a replacement in progress has ended. */
  | { type: 'predecessor-exit'; exit: WorkerExit }
  /** The current worker is ending on an uncaught exception (it waits briefly for a hold). */
  | { type: 'dying' }
  /** The predecessor of a replacement in progress is ending so (its successor does not serve yet). */
  | { type: 'predecessor-dying' }

export type LogLevel = 'info' | 'warn' | 'error'

export type SlotEffect =
  | { do: 'spawn' }
  | { do: 'send-start' }
  | { do: 'send-cancel' }
  | { do: 'send-shutdown'; deadlineMs: number }
  | { do: 'terminate'; reason: ExitReason }
  | { do: 'log'; level: LogLevel; event: string; msg: string; fields?: Record<string, unknown> }
  | { do: 'board'; state: ServiceState }
  | { do: 'count-restart'; reason: ExitReason }
  | { do: 'settle-start'; outcome: StartOutcome }
  | { do: 'settle-stop'; outcome: StopOutcome }
  | { do: 'escalate' }
  /** The current thread could not be terminated: nothing may wait for it any more. */
  | { do: 'stuck' }
  /** A new thread becomes the current one; the old one is kept, still serving, as predecessor. */
  | { do: 'spawn-successor' }
  /** The predecessor's loop is blocked while its successor starts: it is ended. */
  | { do: 'terminate-predecessor' }
  /** The predecessor drains and stops in the background, bounded by `deadlineMs`. */
  | { do: 'retire-predecessor'; reason: ReplaceReason; deadlineMs: number }
  /** The replacement is called off: the predecessor is current again; the successor is ended. */
  | { do: 'restore-predecessor'; successor: 'terminate' | 'retire'; deadlineMs: number }
  | { do: 'settle-replace'; outcome: ReplaceOutcome }
  /** Listen beside the worker on its address and park what connects. */
  | { do: 'hold-ports' }
  /** The successor serves: hand it the parked connections, stop listening. */
  | { do: 'release-ports' }
  /** No successor soon: reset the parked connections, stop listening. */
  | { do: 'drop-ports' }

/** What the slot reads from outside at each step. */
export interface SlotEnv {
  now: number
  service: string
  tuning: ServiceTuning
  /** The run context is cancelled. */
  cancelled: boolean
  /** Epoch ms by which the whole shutdown must be over (Infinity until cancelled). */
  budgetEnd: number
  /** From the status board. */
  heartbeatMs: number
  heapUsedBytes: number
  heapLimitBytes: number
  random?: () => number
}

/** How long `terminate()` may take before the thread is declared stuck. */
export const TERMINATE_MS = 1000
/**
 * How far past the budget a terminate may run: the contract gives 1s past the budget to end
 * threads, and the exit itself needs some of it.
 */
export const TERMINATE_PAST_BUDGET_MS = 300
/**
 * The longest restart back-off during which a dead worker's port stays held: clients wait that
 * long rather than be refused; past it (a crash loop), refusing is the honest answer.
 */
export const HOLD_MAX_BACKOFF_MS = 1000

export function initialModel(): SlotModel {
  return {
    state: { tag: 'idle', board: 'idle' },
    faults: [],
    lastRecycleAt: Number.NEGATIVE_INFINITY,
    recycleHeld: false,
    holding: false,
  }
}

export interface Step {
  model: SlotModel
  effects: SlotEffect[]
}

export function step(model: SlotModel, ev: SlotEvent, env: SlotEnv): Step {
  const out = advance(model, ev, env)
  if (!out.model.holding) return out
  // A held port goes to the worker that serves next, or is let go once none is coming soon.
  const s = out.model.state
  if (s.tag === 'running') out.effects.push({ do: 'release-ports' })
  else if (!mayHold(s, env.now)) out.effects.push({ do: 'drop-ports' })
  else return out
  return { model: { ...out.model, holding: false }, effects: out.effects }
}

/** States on the way from a dead worker to its successor. */
function mayHold(s: SlotState, now: number): boolean {
  switch (s.tag) {
    case 'dying':
    case 'replacing':
      return true
    case 'terminating':
      return s.after === 'fault'
    case 'backoff':
      return s.until - now <= HOLD_MAX_BACKOFF_MS
    case 'starting':
      return !s.boot
    default:
      return false
  }
}

function advance(model: SlotModel, ev: SlotEvent, env: SlotEnv): Step {
  const fx: SlotEffect[] = []
  const next = (state: SlotState, patch: Partial<SlotModel> = {}): Step => ({
    model: { ...model, ...patch, state },
    effects: fx,
  })
  const same = (): Step => ({ model, effects: fx })
  const { now, tuning, service } = env
  const s = model.state

  const log = (level: LogLevel, event: string, msg: string, fields?: Record<string, unknown>) =>
    fx.push({ do: 'log', level, event, msg, ...(fields ? { fields } : {}) })
  const terminate = (
    reason: ExitReason,
    after: 'stop' | 'fault' | 'fault-stop',
    outcome: StopOutcome,
    faultAfterCancel = env.cancelled,
  ): SlotState => {
    fx.push({ do: 'terminate', reason })
    const until = Math.max(now, Math.min(now + TERMINATE_MS, env.budgetEnd + TERMINATE_PAST_BUDGET_MS))
    return { tag: 'terminating', after, outcome, until, full: until === now + TERMINATE_MS, faultAfterCancel }
  }
  /** Sends `shutdown` with what is left until `deadline`, and waits for it. */
  const beginStop = (deadline: number): SlotState => {
    fx.push(
      { do: 'board', state: 'stopping' },
      { do: 'send-shutdown', deadlineMs: Math.max(0, deadline - now) },
    )
    return { tag: 'stopping', until: deadline }
  }
  const stopped = (outcome: StopOutcome): SlotState => {
    fx.push({ do: 'board', state: 'stopped' }, { do: 'settle-stop', outcome })
    return { tag: 'stopped', outcome }
  }
  const crashed = (exit: WorkerExit) =>
    log('error', 'worker.crashed', `${service} worker ended (${exit.reason})`, {
      reason: exit.reason,
      exitCode: exit.exitCode,
      err: exit.err,
    })
  /** A worker that was up has ended on its own: restart, stay down, or escalate. */
  const afterFault = (exit: WorkerExit, afterCancel: boolean): Step => {
    crashed(exit)
    if (afterCancel || env.cancelled) {
      // The run is ending: no restart; its stop reports whether this was a fault.
      fx.push({ do: 'board', state: 'down' })
      return next({
        tag: 'down',
        outcome: afterCancel ? 'crashed' : 'clean',
        exit,
      })
    }
    const decision = decideRestart(tuning, exit, model.faults, now, env.random)
    if (decision.action === 'stay-down') {
      fx.push({ do: 'board', state: 'down' })
      log('warn', 'worker.down', `${service} stays down (restart: ${tuning.restart})`, {
        reason: exit.reason,
        restart: tuning.restart,
      })
      return next({ tag: 'down', outcome: 'clean', exit })
    }
    if (decision.action === 'escalate') {
      fx.push({ do: 'board', state: 'down' })
      // Said before the escalation runs: its supervisor.cancelled is the consequence of this line.
      log(
        'error',
        'worker.crash-loop',
        `${service} crashed more than ${tuning.maxRestarts} times in ${tuning.restartWindow}ms`,
        {
          maxRestarts: tuning.maxRestarts,
          restartWindowMs: tuning.restartWindow,
        },
      )
      fx.push({ do: 'escalate' })
      return next({ tag: 'down', outcome: 'clean', exit })
    }
    fx.push({ do: 'board', state: 'restarting' }, { do: 'count-restart', reason: exit.reason })
    log(
      'warn',
      'worker.restarting',
      `restarting ${service} in ${decision.delayMs}ms (attempt ${decision.attempt})`,
      {
        reason: exit.reason,
        attempt: decision.attempt,
        delayMs: decision.delayMs,
      },
    )
    return next({ tag: 'backoff', until: now + decision.delayMs }, { faults: [...model.faults, now] })
  }

  // A thread that could not be made (EAGAIN: the pids limit reached) is the current thread ended
  // before it began, whatever state asked for it: a boot start that fails, a restart's fault (its
  // back-off, and the crash loop past maxRestarts), a successor that fails its start while the
  // worker it was to replace keeps serving. Never a fault of the process.
  if (ev.type === 'spawn-failed') {
    const exit: WorkerExit = { reason: 'spawn-failed', exitCode: 1, err: ev.err }
    return advance(model, { type: 'exit', exit }, env)
  }

  // A stop for a slot that has no thread, or whose thread is already ending.
  if (ev.type === 'stop') {
    switch (s.tag) {
      case 'idle':
      case 'running':
        return next(beginStop(ev.deadline))
      case 'starting':
        // The worker's shutdown waits for its start to settle (and aborts its waits).
        if (s.boot) fx.push({ do: 'settle-start', outcome: { result: 'cancelled', err: stopErr(service) } })
        return next(beginStop(ev.deadline))
      case 'replacing':
        fx.push({ do: 'settle-replace', outcome: 'cancelled' })
        // Its predecessor is gone: the successor is the one to stop (its shutdown waits its start).
        if (s.predecessorExit) return next(beginStop(ev.deadline))
        fx.push({
          do: 'restore-predecessor',
          successor: 'retire',
          deadlineMs: Math.max(0, ev.deadline - now),
        })
        return next(beginStop(ev.deadline))
      case 'backoff':
        return next(stopped('clean'))
      case 'dying':
        // It crashed before the run was cancelled (a worker that dies after the cancel is not
        // held): a fault the restart policy had taken, as in back-off, not an unclean shutdown.
        return next(terminate('exception', 'fault-stop', 'clean', false))
      case 'down':
        return next(stopped(s.outcome))
      case 'terminating':
        if (s.after !== 'fault') return same()
        return next({ ...s, after: 'fault-stop', outcome: s.faultAfterCancel ? 'crashed' : 'clean' })
      case 'stopping':
        return same()
      case 'stopped':
        fx.push({ do: 'settle-stop', outcome: s.outcome })
        return same()
    }
  }

  // A replacement asked of a worker that is not simply running. One that is starting after a
  // restart, or a recycle's successor, was spawned on the previous configuration: it is replaced
  // once it is up. Any other (in back-off, stopping…) starts next on the current one.
  if (ev.type === 'replace' && s.tag !== 'running') {
    if (!env.cancelled && ((s.tag === 'starting' && !s.boot) || s.tag === 'replacing')) {
      fx.push({ do: 'settle-replace', outcome: 'deferred' })
      return next(s, { replaceDue: ev.reason })
    }
    fx.push({ do: 'settle-replace', outcome: 'skipped' })
    return same()
  }
  switch (s.tag) {
    case 'idle':
      if (ev.type === 'start') {
        fx.push({ do: 'board', state: 'starting' }, { do: 'send-start' })
        return next({ tag: 'starting', boot: true, until: now + tuning.startTimeout })
      }
      if (ev.type === 'exit') {
        log('error', 'worker.crashed', `${service} worker ended before it started (${ev.exit.reason})`, {
          reason: ev.exit.reason,
          exitCode: ev.exit.exitCode,
          err: ev.exit.err,
        })
        fx.push({ do: 'board', state: 'failed' })
        return next({ tag: 'down', outcome: env.cancelled ? 'crashed' : 'clean', exit: ev.exit })
      }
      return same()

    case 'starting':
      switch (ev.type) {
        case 'start-ack':
          fx.push({ do: 'board', state: 'running' })
          if (s.boot) fx.push({ do: 'settle-start', outcome: { result: 'started' } })
          else {
            log('info', 'worker.restarted', `${service} restarted`)
            // Its predecessor had died: nothing overlapped.
            log('info', 'worker.replaced', `${service} replaced (restart)`, {
              reason: 'restart',
              overlapMs: 0,
            })
          }
          return next({ tag: 'running', until: now + tuning.watchdogTimeout })
        case 'start-error':
          if (s.boot || env.cancelled) {
            // The thread stays up: its stop (at its turn) ends whatever the start created.
            if (s.boot) fx.push({ do: 'settle-start', outcome: startFailure(ev.err, env.cancelled) })
            else
              log('warn', 'service.start.cancelled', `${service} restart ended by the shutdown`, {
                err: ev.err,
              })
            fx.push({ do: 'board', state: 'failed' })
            return next({ tag: 'idle', board: 'failed' })
          }
          // A restart that cannot start is one more fault of the same worker.
          log('error', 'service.start.failed', `${service} failed to restart`, { err: ev.err })
          return next(terminate('exception', 'fault', 'clean'))
        case 'exit':
          if (s.boot) {
            log('error', 'worker.crashed', `${service} worker ended during its start (${ev.exit.reason})`, {
              reason: ev.exit.reason,
              exitCode: ev.exit.exitCode,
              err: ev.exit.err,
            })
            fx.push(
              { do: 'settle-start', outcome: startFailure(exitErr(service, ev.exit), env.cancelled) },
              { do: 'board', state: 'failed' },
            )
            return next({ tag: 'down', outcome: env.cancelled ? 'crashed' : 'clean', exit: ev.exit })
          }
          return afterFault(ev.exit, env.cancelled)
        case 'deadline': {
          const err = codedError(
            'ERR_START_TIMEOUT',
            env.cancelled
              ? `"start" did not wind down within the shutdown budget`
              : `"start" got no answer within ${tuning.startTimeout}ms`,
          )
          if (s.boot && !env.cancelled) {
            // The run is cancelled by this failure; the thread stays up, as after an error reply,
            // so that its stop (at its turn) asks it to end its start and the tasks it created
            // (each task.started gets its task.stopped), and terminates it only at its deadline.
            log('error', 'service.start.timeout', `${service} start missed its deadline`, { err })
            fx.push(
              { do: 'settle-start', outcome: startFailure(err, false) },
              { do: 'board', state: 'failed' },
            )
            return next({ tag: 'idle', board: 'failed' })
          }
          log('error', 'service.start.timeout', `${service} start missed its deadline; terminating`, { err })
          if (s.boot) {
            fx.push(
              { do: 'settle-start', outcome: startFailure(err, true) },
              { do: 'board', state: 'failed' },
            )
            // After a cancel the start was asked to wind down and did not: an unclean end.
            return next(terminate('exception', 'stop', 'timeout'))
          }
          return next(terminate('exception', 'fault', 'clean'))
        }
        case 'cancel':
          // Wind the start down: the worker aborts its waits; it gets what a stop would get.
          fx.push({ do: 'send-cancel' })
          return next({ ...s, until: Math.min(s.until, now + tuning.shutdownTimeout, env.budgetEnd) })
        default:
          return same()
      }

    case 'running':
      switch (ev.type) {
        case 'exit':
          return afterFault(ev.exit, env.cancelled)
        case 'deadline': {
          const silentMs = now - env.heartbeatMs
          if (silentMs <= tuning.watchdogTimeout) {
            return next({ tag: 'running', until: env.heartbeatMs + tuning.watchdogTimeout + 1 })
          }
          // No heap snapshot here: V8 takes one on the worker's own thread, which is the one blocked.
          log('error', 'worker.watchdog', `${service} heartbeat silent for ${silentMs}ms; terminating`, {
            silentMs,
            watchdogTimeoutMs: tuning.watchdogTimeout,
          })
          if (env.cancelled) return next(terminate('watchdog', 'fault', 'clean'))
          // Not ready from this instant: the thread serves nothing while it is ended (up to
          // TERMINATE_MS); its exit then says whether it restarts or stays down.
          fx.push({ do: 'board', state: 'restarting' }, { do: 'hold-ports' })
          return next(terminate('watchdog', 'fault', 'clean'), { holding: true })
        }
        case 'dying':
          if (env.cancelled) return same()
          fx.push({ do: 'board', state: 'restarting' }, { do: 'hold-ports' })
          return next({ tag: 'dying', until: now + TERMINATE_MS }, { holding: true })
        case 'tick': {
          // A reload deferred while this thread started: it serves first (the connections held
          // while it was down are handed to it, callers are wired to it), then is replaced.
          const due = model.replaceDue
          if (!due || env.cancelled) return recycleCheck(model, env, fx, log, next, same)
          log('info', 'worker.replacing', `replacing ${service} (${due}, asked while it started)`, {
            reason: due,
          })
          fx.push({ do: 'spawn-successor' }, { do: 'send-start' })
          return next(replacing(due, env), { replaceDue: undefined })
        }
        case 'replace':
          log('info', 'worker.replacing', `replacing ${service} (${ev.reason})`, { reason: ev.reason })
          fx.push({ do: 'spawn-successor' }, { do: 'send-start' })
          return next(replacing(ev.reason, env), { replaceDue: undefined })
        default:
          return same()
      }

    case 'dying':
      // Only a worker that crashed before the cancel is here: a cancel since changes nothing.
      if (ev.type === 'exit') return afterFault(ev.exit, false)
      // It announced its end and did not end: it is ended.
      if (ev.type === 'deadline') return next(terminate('exception', 'fault', 'clean', false))
      return same()

    case 'backoff':
      if (ev.type === 'deadline') {
        if (env.cancelled) return same() // its stop ends it
        fx.push({ do: 'spawn' }, { do: 'send-start' })
        // Spawned now, on the current configuration: a reload that came before is served.
        return next(
          { tag: 'starting', boot: false, until: now + tuning.startTimeout },
          { replaceDue: undefined },
        )
      }
      if (ev.type === 'cancel') {
        fx.push({ do: 'board', state: 'down' })
        return next({ tag: 'down', outcome: 'clean' })
      }
      return same()

    case 'replacing': {
      const called = (why: string, err?: Error) => {
        log(
          'error',
          'worker.replace.failed',
          `${service} successor did not start (${why}); the current worker stays`,
          {
            reason: s.reason,
            err,
          },
        )
        fx.push({ do: 'settle-replace', outcome: 'failed' })
        fx.push({ do: 'restore-predecessor', successor: 'terminate', deadlineMs: 0 })
        // A predecessor that died meanwhile leaves nothing running: the restart policy takes over.
        if (s.predecessorExit) return afterFault(s.predecessorExit, env.cancelled)
        // One that is ending is waited for as any dying worker, its port still held.
        if (s.predecessorDying) return next({ tag: 'dying', until: now + TERMINATE_MS })
        fx.push({ do: 'board', state: 'running' })
        // A reload deferred to this successor concerns the thread kept as much (it predates the
        // reload): replaced at the next tick, once (the replacement it starts clears it).
        return next({ tag: 'running', until: now + tuning.watchdogTimeout })
      }
      switch (ev.type) {
        case 'start-ack': {
          fx.push(
            { do: 'board', state: 'running' },
            {
              do: 'retire-predecessor',
              reason: s.reason,
              deadlineMs: Math.max(0, Math.min(tuning.shutdownTimeout, env.budgetEnd - now)),
            },
            { do: 'settle-replace', outcome: 'replaced' },
          )
          const up = { tag: 'running', until: now + tuning.watchdogTimeout } as const
          // Its predecessor crashed meanwhile (ended, or announced its uncaught exception, whose
          // exit no longer reaches this slot once the successor is current): a fault like any
          // other, though the thread that replaces it was already on its way.
          const died: WorkerExit | undefined =
            s.predecessorExit ??
            (s.predecessorDying ? { reason: s.predecessorDying, exitCode: 1 } : undefined)
          if (!died) return next(up)
          // Past the restart intensity it is a crash loop all the same: the run ends. (A service
          // that is not restarted after a crash keeps this successor: a reload or a recycle asked
          // for it, not the crash.)
          if (decideRestart(tuning, died, model.faults, now, env.random).action === 'escalate') {
            log(
              'error',
              'worker.crash-loop',
              `${service} crashed more than ${tuning.maxRestarts} times in ${tuning.restartWindow}ms`,
              { maxRestarts: tuning.maxRestarts, restartWindowMs: tuning.restartWindow },
            )
            fx.push({ do: 'escalate' })
          }
          fx.push({ do: 'count-restart', reason: died.reason })
          return next(up, { faults: [...model.faults, now] })
        }
        case 'start-error':
          return called('error reply', ev.err)
        case 'exit':
          return called(`exited: ${ev.exit.reason}`, ev.exit.err)
        case 'deadline': {
          if (now >= s.startUntil) return called('start deadline')
          if (s.predecessorDying || s.predecessorExit) return next({ ...s, until: s.startUntil })
          // The predecessor still serves while its successor starts (which may take minutes: the
          // certificate service's jitter): the running watchdog's rule holds for it.
          const silentMs = now - env.heartbeatMs
          if (silentMs <= tuning.watchdogTimeout) return next({ ...s, until: watchUntil(s.startUntil, env) })
          log(
            'error',
            'worker.watchdog',
            `${service} heartbeat silent for ${silentMs}ms while its successor starts; terminating it`,
            { silentMs, watchdogTimeoutMs: tuning.watchdogTimeout, predecessor: true },
          )
          // Its port is held until the successor serves, as for a crash at this point.
          fx.push({ do: 'terminate-predecessor' }, { do: 'board', state: 'restarting' }, { do: 'hold-ports' })
          return next({ ...s, predecessorDying: 'watchdog', until: s.startUntil }, { holding: true })
        }
        case 'predecessor-dying':
          // The worker that serves crashed while its successor starts: its port is held from now
          // until the successor serves, as for any crash.
          if (env.cancelled || model.holding) return same()
          fx.push({ do: 'board', state: 'restarting' }, { do: 'hold-ports' })
          return next({ ...s, predecessorDying: 'exception' }, { holding: true })
        case 'predecessor-exit':
          log(
            'error',
            'worker.crashed',
            `${service} worker ended while its successor starts (${ev.exit.reason})`,
            {
              reason: ev.exit.reason,
              exitCode: ev.exit.exitCode,
              err: ev.exit.err,
            },
          )
          fx.push({ do: 'board', state: 'restarting' })
          return next({ ...s, predecessorExit: ev.exit })
        case 'cancel':
          fx.push({ do: 'settle-replace', outcome: 'cancelled' })
          if (s.predecessorExit) {
            fx.push({ do: 'send-cancel' })
            return next({
              tag: 'starting',
              boot: false,
              until: Math.min(s.startUntil, now + tuning.shutdownTimeout, env.budgetEnd),
            })
          }
          // The run is ending: keep the worker that serves; the successor winds down.
          fx.push({
            do: 'restore-predecessor',
            successor: 'retire',
            deadlineMs: Math.max(0, Math.min(tuning.shutdownTimeout, env.budgetEnd - now)),
          })
          // A predecessor that is ending is stopped as a dying worker is.
          if (s.predecessorDying) return next({ tag: 'dying', until: now + TERMINATE_MS })
          fx.push({ do: 'board', state: 'running' })
          return next({ tag: 'running', until: now + tuning.watchdogTimeout })
        default:
          return same()
      }
    }

    case 'stopping':
      switch (ev.type) {
        case 'shutdown-ack':
          if (ev.timedOut)
            log('error', 'service.shutdown.timeout', `${service} cut tasks short at its deadline`)
          return next(terminate('terminated', 'stop', ev.timedOut ? 'timeout' : 'clean'))
        case 'shutdown-error':
          log('error', 'service.shutdown.failed', `${service} answered its shutdown with an error`, {
            err: ev.err,
          })
          return next(terminate('terminated', 'stop', 'error'))
        case 'deadline':
          log('error', 'service.shutdown.timeout', `${service} missed its shutdown deadline; terminating`)
          return next(terminate('terminated', 'stop', 'timeout'))
        case 'exit':
          log('error', 'worker.crashed', `${service} worker died during shutdown (${ev.exit.reason})`, {
            reason: ev.exit.reason,
            exitCode: ev.exit.exitCode,
            err: ev.exit.err,
          })
          return next(stopped('crashed'))
        default:
          return same()
      }

    case 'terminating':
      if (ev.type === 'exit') {
        if (s.after === 'fault') return afterFault(ev.exit, s.faultAfterCancel)
        if (s.after === 'fault-stop') crashed(ev.exit)
        return next(stopped(s.outcome))
      }
      if (ev.type === 'deadline') {
        // Past the budget a stop's terminate has no time of its own: the stop ends as it was, and
        // the process's exit, ending every thread at once, names those that do not end. (Each
        // healthy thread stopped after a wedged one was declared stuck within 0 ms.)
        if (!s.full && s.after === 'stop') return next(stopped(s.outcome))
        log('error', 'worker.stuck', `${service} thread could not be terminated within ${TERMINATE_MS}ms`)
        fx.push({ do: 'stuck' })
        const stuck: WorkerExit = {
          reason: 'exception',
          exitCode: 1,
          err: codedError('ERR_WORKER_STUCK', 'stuck'),
        }
        if (s.after === 'fault') return afterFault(stuck, s.faultAfterCancel)
        if (s.after === 'fault-stop') crashed(stuck)
        return next(stopped('stuck'))
      }
      return same()

    case 'down':
      if (ev.type === 'start') {
        fx.push(
          { do: 'board', state: 'failed' },
          { do: 'settle-start', outcome: { result: 'failed', err: exitErr(service, s.exit) } },
        )
      }
      return same()

    case 'stopped':
      return same()
  }
}

function recycleCheck(
  model: SlotModel,
  env: SlotEnv,
  fx: SlotEffect[],
  log: (level: LogLevel, event: string, msg: string, fields?: Record<string, unknown>) => void,
  next: (state: SlotState, patch?: Partial<SlotModel>) => Step,
  same: () => Step,
): Step {
  const { tuning, service, now, heapUsedBytes, heapLimitBytes } = env
  if (
    env.cancelled ||
    heapLimitBytes <= 0 ||
    heapUsedBytes / heapLimitBytes < tuning.recycleAtPercent / 100
  ) {
    return same()
  }
  const fields = { heapUsedBytes, heapLimitBytes, recycleAtPercent: tuning.recycleAtPercent }
  // At most once per restartWindow: a worker over the threshold right after a recycle is left to
  // its heap limit (oom), which the restart policy bounds.
  if (now - model.lastRecycleAt < tuning.restartWindow) {
    if (model.recycleHeld) return same()
    log(
      'warn',
      'worker.recycle.held',
      `${service} is over its recycling threshold again within restartWindow; not recycling`,
      fields,
    )
    return next(model.state, { recycleHeld: true })
  }
  log(
    'warn',
    'worker.recycling',
    `${service} heap above ${tuning.recycleAtPercent}% of its limit: recycling`,
    fields,
  )
  // A successor first; the worker over its threshold keeps serving until the successor is up.
  fx.push({ do: 'count-restart', reason: 'recycled' }, { do: 'spawn-successor' }, { do: 'send-start' })
  return next(replacing('recycle', env), { lastRecycleAt: now, recycleHeld: false })
}

function replacing(reason: ReplaceReason, env: SlotEnv): SlotState {
  const startUntil = env.now + env.tuning.startTimeout
  return { tag: 'replacing', reason, startUntil, until: watchUntil(startUntil, env) }
}

/** When the watchdog next reads a serving predecessor's heartbeat, within its successor's start. */
function watchUntil(startUntil: number, env: SlotEnv): number {
  return Math.min(startUntil, env.heartbeatMs + env.tuning.watchdogTimeout + 1)
}

function startFailure(err: Error, cancelled: boolean): StartOutcome {
  return cancelled ? { result: 'cancelled', err } : { result: 'failed', err }
}

function exitErr(service: string, exit: WorkerExit | undefined): Error {
  return codedError(
    'ERR_WORKER_EXITED',
    `${service} worker exited before its start was acknowledged (${exit?.reason ?? 'unknown'}, code ${exit?.exitCode ?? '?'})`,
    exit?.err,
  )
}

function stopErr(service: string): Error {
  return codedError('ERR_START_CANCELLED', `${service} was stopped before its start completed`)
}
