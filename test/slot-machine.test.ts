import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { ServiceTuning } from '../shared/config/types.js'
import {
  initialModel,
  type SlotEffect,
  type SlotEnv,
  type SlotEvent,
  type SlotModel,
  type SlotState,
  step,
  TERMINATE_MS,
  TERMINATE_PAST_BUDGET_MS,
} from '../supervisor/slot-machine.js'
import type { WorkerExit } from '../supervisor/worker-handle.js'

/** Every transition of a service slot, without a thread: state in, event in, state and effects out. */

const tuning: ServiceTuning = {
  enabled: true,
  startTimeout: 30_000,
  shutdownTimeout: 10_000,
  resourceLimits: {},
  restart: 'permanent',
  maxRestarts: 2,
  restartWindow: 60_000,
  restartBackoff: 100,
  restartBackoffMax: 1000,
  watchdogTimeout: 5000,
  recycleAtPercent: 90,
}
const NOW = 1_000_000

function env(over: Partial<SlotEnv> = {}): SlotEnv {
  return {
    now: NOW,
    service: 'gateway',
    tuning,
    cancelled: false,
    budgetEnd: Number.POSITIVE_INFINITY,
    heartbeatMs: NOW,
    heapUsedBytes: 0,
    heapLimitBytes: 100,
    random: () => 1,
    ...over,
  }
}

const at = (state: SlotState, over: Partial<SlotModel> = {}): SlotModel => ({
  ...initialModel(),
  state,
  ...over,
})
const crash: WorkerExit = { reason: 'exception', exitCode: 1, err: new Error('boom') }
const does = (effects: SlotEffect[]) => effects.map((e) => (e.do === 'log' ? `log:${e.event}` : e.do))
const startResult = (effects: SlotEffect[]) => {
  const e = effects.find((x) => x.do === 'settle-start')
  return e?.do === 'settle-start' ? e.outcome.result : undefined
}
const settled = (effects: SlotEffect[], kind: 'settle-start' | 'settle-stop') =>
  effects.find((e) => e.do === kind) as
    | { do: 'settle-start'; outcome: { result: string } }
    | { do: 'settle-stop'; outcome: string }
    | undefined

function run(model: SlotModel, ev: SlotEvent, e: Partial<SlotEnv> = {}) {
  return step(model, ev, env(e))
}

describe('idle (thread up, not started)', () => {
  test('start sends start and waits until startTimeout', () => {
    const r = run(initialModel(), { type: 'start' })
    assert.deepEqual(r.model.state, { tag: 'starting', boot: true, until: NOW + tuning.startTimeout })
    assert.deepEqual(does(r.effects), ['board', 'send-start'])
  })
  test('stop sends shutdown with what is left until the deadline', () => {
    const r = run(initialModel(), { type: 'stop', deadline: NOW + 700 })
    assert.deepEqual(r.model.state, { tag: 'stopping', until: NOW + 700 })
    assert.deepEqual(r.effects[1], { do: 'send-shutdown', deadlineMs: 700 })
  })
  test('a thread that dies before its start: the start then fails, its stop is clean', () => {
    const r = run(initialModel(), { type: 'exit', exit: crash })
    assert.equal(r.model.state.tag, 'down')
    const s = run(r.model, { type: 'start' })
    assert.equal(startResult(s.effects), 'failed')
    assert.equal(
      settled(run(r.model, { type: 'stop', deadline: NOW }).effects, 'settle-stop')?.outcome,
      'clean',
    )
  })
  test('…and after the run was cancelled, that death is an unclean end', () => {
    const r = run(initialModel(), { type: 'exit', exit: crash }, { cancelled: true })
    assert.equal(
      settled(run(r.model, { type: 'stop', deadline: NOW }).effects, 'settle-stop')?.outcome,
      'crashed',
    )
  })
})

describe('starting', () => {
  const boot = at({ tag: 'starting', boot: true, until: NOW + 30_000 })
  const restart = at({ tag: 'starting', boot: false, until: NOW + 30_000 })

  test('ack: running, the boot start settles started, the watchdog is armed', () => {
    const r = run(boot, { type: 'start-ack' })
    assert.deepEqual(r.model.state, { tag: 'running', until: NOW + tuning.watchdogTimeout })
    assert.equal(startResult(r.effects), 'started')
  })
  test('a restart acknowledged logs worker.restarted and settles nothing', () => {
    const r = run(restart, { type: 'start-ack' })
    assert.equal(r.model.state.tag, 'running')
    assert.ok(does(r.effects).includes('log:worker.restarted'))
    assert.equal(settled(r.effects, 'settle-start'), undefined)
  })
  test('error reply at boot: failed, the thread stays up for its graceful stop', () => {
    const r = run(boot, { type: 'start-error', err: new Error('no') })
    assert.deepEqual(r.model.state, { tag: 'idle', board: 'failed' })
    assert.equal(startResult(r.effects), 'failed')
    assert.ok(!does(r.effects).includes('terminate'))
  })
  test('error reply after the cancel: the start is reported cancelled, not failed', () => {
    const r = run(boot, { type: 'start-error', err: new Error('aborted') }, { cancelled: true })
    assert.equal(startResult(r.effects), 'cancelled')
  })
  test('a restart that answers with an error is one more fault: terminated, then the policy', () => {
    const r = run(restart, { type: 'start-error', err: new Error('no') })
    assert.equal(r.model.state.tag, 'terminating')
    assert.deepEqual(r.effects.at(-1), { do: 'terminate', reason: 'exception' })
    const e = run(r.model, { type: 'exit', exit: { reason: 'exception', exitCode: 1 } })
    assert.equal(e.model.state.tag, 'backoff')
  })
  test('deadline at boot: the start fails with ERR_START_TIMEOUT; the thread stays up for its stop to end it', () => {
    const r = run(boot, { type: 'deadline' })
    const outcome = settled(r.effects, 'settle-start')?.outcome as { result: string; err: { code: string } }
    assert.deepEqual([outcome.result, outcome.err.code], ['failed', 'ERR_START_TIMEOUT'])
    assert.deepEqual(r.model.state, { tag: 'idle', board: 'failed' })
    assert.ok(!does(r.effects).includes('terminate'))
    // Its stop sends shutdown (the worker ends its start and its tasks), terminating at the deadline.
    const stop = run(r.model, { type: 'stop', deadline: NOW + 300 }, { cancelled: true })
    assert.deepEqual(stop.effects.at(-1), { do: 'send-shutdown', deadlineMs: 300 })
    const late = run(stop.model, { type: 'deadline' }, { cancelled: true })
    assert.deepEqual(late.effects.at(-1), { do: 'terminate', reason: 'terminated' })
  })
  test('cancel: the worker is told to wind down and the wait shrinks to the shutdown share and the budget', () => {
    const r = run(boot, { type: 'cancel' }, { budgetEnd: NOW + 3000 })
    assert.deepEqual(does(r.effects), ['send-cancel'])
    assert.deepEqual(r.model.state, { tag: 'starting', boot: true, until: NOW + 3000 })
    const late = run(r.model, { type: 'deadline' }, { cancelled: true, budgetEnd: NOW + 3000 })
    assert.equal(startResult(late.effects), 'cancelled')
    const gone = run(late.model, { type: 'exit', exit: crash }, { cancelled: true })
    assert.equal(
      settled(gone.effects, 'settle-stop')?.outcome,
      'timeout',
      'a start that ignored the cancel is unclean',
    )
  })
  test('the thread dies during its boot start: failed', () => {
    const r = run(boot, { type: 'exit', exit: crash })
    assert.equal(r.model.state.tag, 'down')
    assert.equal(startResult(r.effects), 'failed')
  })
  test('stop during a restart start: shutdown is sent (the worker winds its start down first)', () => {
    const r = run(restart, { type: 'stop', deadline: NOW + 500 })
    assert.deepEqual(r.model.state, { tag: 'stopping', until: NOW + 500 })
  })
})

describe('running', () => {
  const running = at({ tag: 'running', until: NOW })

  test('exit: the first fault restarts at once, the next after a back-off; each is counted', () => {
    const r = run(running, { type: 'exit', exit: crash })
    assert.deepEqual(r.model.state, { tag: 'backoff', until: NOW })
    assert.deepEqual(r.model.faults, [NOW])
    assert.ok(does(r.effects).includes('count-restart'))
    const again = run({ ...running, faults: [NOW - 1000] }, { type: 'exit', exit: crash })
    assert.deepEqual(again.model.state, { tag: 'backoff', until: NOW + 100 })
  })
  test('exit past maxRestarts in the window: escalate (crash-loop)', () => {
    const r = run({ ...running, faults: [NOW - 2000, NOW - 1000] }, { type: 'exit', exit: crash })
    assert.equal(r.model.state.tag, 'down')
    const order = does(r.effects)
    assert.ok(order.includes('escalate'))
    assert.ok(order.indexOf('log:worker.crash-loop') < order.indexOf('escalate'), 'the cause is logged first')
  })
  test('temporary: stays down', () => {
    const r = step(
      running,
      { type: 'exit', exit: crash },
      env({ tuning: { ...tuning, restart: 'temporary' } }),
    )
    assert.equal(r.model.state.tag, 'down')
    assert.ok(does(r.effects).includes('log:worker.down'))
  })
  test('exit after the cancel: no restart, and its stop reports the crash', () => {
    const r = run(running, { type: 'exit', exit: crash }, { cancelled: true })
    assert.equal(r.model.state.tag, 'down')
    assert.equal(
      settled(run(r.model, { type: 'stop', deadline: NOW }).effects, 'settle-stop')?.outcome,
      'crashed',
    )
  })
  test('watchdog: a fresh heartbeat re-arms; a silent one terminates (reason watchdog)', () => {
    const fresh = run(running, { type: 'deadline' }, { heartbeatMs: NOW - 1000 })
    assert.deepEqual(fresh.model.state, { tag: 'running', until: NOW - 1000 + tuning.watchdogTimeout + 1 })
    const silent = run(running, { type: 'deadline' }, { heartbeatMs: NOW - 6000 })
    assert.equal(silent.model.state.tag, 'terminating')
    assert.deepEqual(silent.effects.at(-1), { do: 'terminate', reason: 'watchdog' })
    // Not ready from that instant, not once the thread is gone (up to TERMINATE_MS later).
    assert.deepEqual(silent.effects[1], { do: 'board', state: 'restarting' })
  })
  test('tick over the heap threshold recycles, at most once per restartWindow', () => {
    const r = run(running, { type: 'tick' }, { heapUsedBytes: 95 })
    assert.deepEqual(r.model.state, {
      tag: 'replacing',
      reason: 'recycle',
      startUntil: NOW + tuning.startTimeout,
      until: NOW + tuning.watchdogTimeout + 1,
    })
    const again = run(
      at({ tag: 'running', until: NOW }, { lastRecycleAt: NOW - 1000 }),
      { type: 'tick' },
      { heapUsedBytes: 95 },
    )
    assert.equal(again.model.state.tag, 'running')
    assert.ok(again.model.recycleHeld)
    assert.deepEqual(
      does(run(again.model, { type: 'tick' }, { heapUsedBytes: 95 }).effects),
      [],
      'held is logged once',
    )
    assert.deepEqual(does(run(running, { type: 'tick' }, { heapUsedBytes: 50 }).effects), [])
  })
  test('stop: shutdown with the deadline', () => {
    const r = run(running, { type: 'stop', deadline: NOW + 10 })
    assert.deepEqual(r.model.state, { tag: 'stopping', until: NOW + 10 })
  })
})

describe('backoff', () => {
  const backoff = at({ tag: 'backoff', until: NOW })
  test('due: a new thread and a restart start', () => {
    const r = run(backoff, { type: 'deadline' })
    assert.deepEqual(does(r.effects), ['spawn', 'send-start'])
    assert.deepEqual(r.model.state, { tag: 'starting', boot: false, until: NOW + tuning.startTimeout })
  })
  test('cancel: no restart will begin', () => {
    assert.equal(run(backoff, { type: 'cancel' }).model.state.tag, 'down')
  })
  test('stop: nothing to stop, clean', () => {
    assert.equal(
      settled(run(backoff, { type: 'stop', deadline: NOW }).effects, 'settle-stop')?.outcome,
      'clean',
    )
  })
})

describe('a thread that could not be made (spawn-failed: new Worker() threw)', () => {
  const eagain = Object.assign(new Error('EAGAIN'), { code: 'ERR_WORKER_INIT_FAILED' })
  const failed: SlotEvent = { type: 'spawn-failed', err: eagain }
  const crashedFields = (effects: SlotEffect[]) =>
    effects.find(
      (e): e is Extract<SlotEffect, { do: 'log' }> => e.do === 'log' && e.event === 'worker.crashed',
    )?.fields

  test('at boot: the service is down, its start fails and its stop is clean', () => {
    const r = run(initialModel(), failed)
    assert.equal(r.model.state.tag, 'down')
    assert.deepEqual(crashedFields(r.effects), { reason: 'spawn-failed', exitCode: 1, err: eagain })
    assert.equal(startResult(run(r.model, { type: 'start' }).effects), 'failed')
    assert.equal(
      settled(run(r.model, { type: 'stop', deadline: NOW }).effects, 'settle-stop')?.outcome,
      'clean',
    )
  })
  test("a restart's: one more fault of the service, restarted after its back-off; nothing to terminate", () => {
    const due = run(at({ tag: 'backoff', until: NOW }, { faults: [NOW - 10] }), { type: 'deadline' })
    assert.deepEqual(does(due.effects), ['spawn', 'send-start'])
    const r = run(due.model, failed)
    assert.deepEqual(r.model.state, { tag: 'backoff', until: NOW + tuning.restartBackoff })
    assert.deepEqual(r.model.faults, [NOW - 10, NOW])
    assert.deepEqual(does(r.effects), [
      'log:worker.crashed',
      'board',
      'count-restart',
      'log:worker.restarting',
    ])
    assert.deepEqual(r.effects[2], { do: 'count-restart', reason: 'spawn-failed' })
    assert.deepEqual(crashedFields(r.effects), { reason: 'spawn-failed', exitCode: 1, err: eagain })
  })
  test("a restart's past maxRestarts in the window: a crash loop (the run ends, exit 1)", () => {
    const r = run(
      at({ tag: 'starting', boot: false, until: NOW + 1000 }, { faults: [NOW - 20, NOW - 10] }),
      failed,
    )
    assert.equal(r.model.state.tag, 'down')
    assert.deepEqual(does(r.effects).slice(-2), ['log:worker.crash-loop', 'escalate'])
  })
  test("a successor's (reload, recycle): the replacement fails, the worker that serves stays current", () => {
    for (const reason of ['reload', 'recycle'] as const) {
      const replacing = at({ tag: 'replacing', reason, startUntil: NOW + 30_000, until: NOW + 5000 })
      const r = run(replacing, failed)
      assert.deepEqual(r.model.state, { tag: 'running', until: NOW + tuning.watchdogTimeout }, reason)
      assert.deepEqual(r.model.faults, [], 'no fault of the worker that serves')
      assert.deepEqual(
        does(r.effects),
        ['log:worker.replace.failed', 'settle-replace', 'restore-predecessor', 'board'],
        reason,
      )
      assert.deepEqual(r.effects[1], { do: 'settle-replace', outcome: 'failed' })
    }
  })
})

describe('replacing (recycle, reload): the successor starts beside the worker that serves', () => {
  const replacing = at({ tag: 'replacing', reason: 'reload', startUntil: NOW + 30_000, until: NOW + 30_000 })
  test('running + replace: a successor is spawned and started; readiness is untouched', () => {
    const r = run(at({ tag: 'running', until: NOW }), { type: 'replace', reason: 'reload' })
    assert.deepEqual(r.model.state, {
      tag: 'replacing',
      reason: 'reload',
      startUntil: NOW + tuning.startTimeout,
      until: NOW + tuning.watchdogTimeout + 1,
    })
    assert.deepEqual(does(r.effects), ['log:worker.replacing', 'spawn-successor', 'send-start'])
  })
  test('replace asked of a worker in back-off is skipped: its restart spawns on the current configuration', () => {
    const r = run(at({ tag: 'backoff', until: NOW }), { type: 'replace', reason: 'reload' })
    assert.deepEqual(r.effects, [{ do: 'settle-replace', outcome: 'skipped' }])
    assert.equal(r.model.replaceDue, undefined)
  })
  test('replace asked while a restart starts: deferred, and the thread is replaced once it is up', () => {
    const restarting = at({ tag: 'starting', boot: false, until: NOW + 30_000 })
    const r = run(restarting, { type: 'replace', reason: 'reload' })
    assert.deepEqual(r.effects, [{ do: 'settle-replace', outcome: 'deferred' }])
    assert.deepEqual(r.model.state, restarting.state)
    // Up: it serves first (held connections handed over, callers wired), then the next tick
    // replaces it.
    const up = run({ ...r.model, holding: true }, { type: 'start-ack' })
    assert.deepEqual(up.model.state, { tag: 'running', until: NOW + tuning.watchdogTimeout })
    assert.ok(does(up.effects).includes('release-ports'))
    const tick = run(up.model, { type: 'tick' })
    assert.deepEqual(tick.model.state, {
      tag: 'replacing',
      reason: 'reload',
      startUntil: NOW + tuning.startTimeout,
      until: NOW + tuning.watchdogTimeout + 1,
    })
    assert.deepEqual(does(tick.effects), ['log:worker.replacing', 'spawn-successor', 'send-start'])
    assert.equal(tick.model.replaceDue, undefined)
    // A crash before it is up: its restart spawns on the current configuration, nothing is due.
    const crashed = run(r.model, { type: 'exit', exit: crash })
    const respawned = run(crashed.model, { type: 'deadline' })
    assert.equal(respawned.model.state.tag, 'starting')
    assert.equal(respawned.model.replaceDue, undefined)
  })
  test("a reload deferred to a recycle's successor that fails: the thread kept is replaced at the next tick, once", () => {
    const recycling = at({
      tag: 'replacing',
      reason: 'recycle',
      startUntil: NOW + 30_000,
      until: NOW + 30_000,
    })
    const deferred = run(recycling, { type: 'replace', reason: 'reload' })
    const kept = run(deferred.model, { type: 'start-error', err: new Error('no') })
    assert.equal(kept.model.state.tag, 'running')
    const tick = run(kept.model, { type: 'tick' })
    assert.deepEqual(tick.model.state, {
      tag: 'replacing',
      reason: 'reload',
      startUntil: NOW + tuning.startTimeout,
      until: NOW + tuning.watchdogTimeout + 1,
    })
    // That one fails too: no further attempt.
    const again = run(tick.model, { type: 'start-error', err: new Error('no') })
    assert.deepEqual(does(run(again.model, { type: 'tick' }).effects), [])
  })
  test("replace asked while a recycle's successor starts: deferred, and that successor is replaced once up", () => {
    const recycling = at({
      tag: 'replacing',
      reason: 'recycle',
      startUntil: NOW + 30_000,
      until: NOW + 30_000,
    })
    const r = run(recycling, { type: 'replace', reason: 'reload' })
    assert.deepEqual(r.effects, [{ do: 'settle-replace', outcome: 'deferred' }])
    const up = run(r.model, { type: 'start-ack' })
    assert.deepEqual(does(up.effects), ['board', 'retire-predecessor', 'settle-replace'])
    assert.equal(up.model.state.tag, 'running')
    const tick = run(up.model, { type: 'tick' })
    assert.deepEqual(does(tick.effects), ['log:worker.replacing', 'spawn-successor', 'send-start'])
    assert.deepEqual(tick.model.state, {
      tag: 'replacing',
      reason: 'reload',
      startUntil: NOW + tuning.startTimeout,
      until: NOW + tuning.watchdogTimeout + 1,
    })
  })
  test('the successor is up: the predecessor drains in the background, bounded by shutdownTimeout and the budget', () => {
    const r = run(replacing, { type: 'start-ack' }, { budgetEnd: NOW + 4000 })
    assert.equal(r.model.state.tag, 'running')
    assert.deepEqual(
      r.effects.find((e) => e.do === 'retire-predecessor'),
      { do: 'retire-predecessor', reason: 'reload', deadlineMs: 4000 },
    )
    assert.deepEqual(r.effects.at(-1), { do: 'settle-replace', outcome: 'replaced' })
  })
  test('the successor fails (error, exit, deadline): it is ended and the predecessor stays current', () => {
    for (const ev of [
      { type: 'start-error', err: new Error('x') },
      { type: 'exit', exit: crash },
      { type: 'deadline' },
    ] satisfies SlotEvent[]) {
      // The deadline at the start's, the predecessor's heartbeat fresh.
      const late = NOW + 30_000
      const r = run(replacing, ev, ev.type === 'deadline' ? { now: late, heartbeatMs: late } : {})
      assert.equal(r.model.state.tag, 'running', ev.type)
      assert.ok(does(r.effects).includes('log:worker.replace.failed'), ev.type)
      assert.ok(
        r.effects.some((e) => e.do === 'restore-predecessor' && e.successor === 'terminate'),
        ev.type,
      )
    }
  })
  test("the predecessor's heartbeat is watched while its successor starts: a fresh one re-arms within the start's deadline", () => {
    const r = run(replacing, { type: 'deadline' }, { now: NOW + 4000, heartbeatMs: NOW + 3000 })
    assert.deepEqual(r.model.state, { ...replacing.state, until: NOW + 3000 + tuning.watchdogTimeout + 1 })
    assert.deepEqual(r.effects, [])
    // Never past the start's own deadline, which then ends the successor as before.
    const near = run(replacing, { type: 'deadline' }, { now: NOW + 29_000, heartbeatMs: NOW + 29_000 })
    assert.deepEqual(near.model.state, { ...replacing.state, until: NOW + 30_000 })
  })
  test('a predecessor silent past its watchdog while its successor starts is ended, its port held; its end counts as a fault once the successor is up', () => {
    const r = run(replacing, { type: 'deadline' }, { now: NOW + 6000, heartbeatMs: NOW })
    assert.deepEqual(does(r.effects), ['log:worker.watchdog', 'terminate-predecessor', 'board', 'hold-ports'])
    const logged = r.effects[0]
    assert.ok(logged?.do === 'log' && logged.fields?.predecessor === true && logged.fields.silentMs === 6000)
    assert.equal(r.model.holding, true)
    assert.deepEqual(r.model.state, { ...replacing.state, predecessorDying: 'watchdog' })
    // It is not read again (it is ending); the successor's start keeps its deadline.
    const again = run(r.model, { type: 'deadline' }, { now: NOW + 12_000, heartbeatMs: NOW })
    assert.deepEqual(again.effects, [])
    assert.deepEqual(again.model.state, { ...replacing.state, predecessorDying: 'watchdog' })
    // The successor serves before the predecessor's exit: a fault, reason watchdog; the port goes to it.
    const up = run(r.model, { type: 'start-ack' }, { now: NOW + 7000 })
    assert.equal(up.model.state.tag, 'running')
    assert.deepEqual(up.model.faults, [NOW + 7000])
    assert.deepEqual(
      up.effects.filter((e) => e.do === 'count-restart'),
      [{ do: 'count-restart', reason: 'watchdog' }],
    )
    assert.deepEqual(does(up.effects).slice(-1), ['release-ports'])
    // The successor fails instead: the predecessor is waited for as a dying worker, port held.
    const failed = run(r.model, { type: 'start-error', err: new Error('no') }, { now: NOW + 7000 })
    assert.equal(failed.model.state.tag, 'dying')
    assert.equal(failed.model.holding, true)
  })
  test('the predecessor dies meanwhile: not ready until the successor is up; if that fails too, the policy', () => {
    const r = run(replacing, { type: 'predecessor-exit', exit: crash })
    assert.ok(does(r.effects).includes('log:worker.crashed'))
    assert.deepEqual(
      r.effects.find((e) => e.do === 'board'),
      { do: 'board', state: 'restarting' },
    )
    const failed = run(r.model, { type: 'start-error', err: new Error('x') })
    assert.equal(failed.model.state.tag, 'backoff')
    assert.deepEqual(failed.model.faults, [NOW])
    // The successor comes up: the crash still counts, once (restart intensity, restarts metric).
    const up = run(r.model, { type: 'start-ack' })
    assert.equal(up.model.state.tag, 'running')
    assert.deepEqual(up.model.faults, [NOW])
    assert.deepEqual(
      up.effects.filter((e) => e.do === 'count-restart'),
      [{ do: 'count-restart', reason: crash.reason }],
    )
  })
  test('the predecessor dies while the successor starts, past the restart intensity: a crash loop, as any other', () => {
    // Two faults in the window already (maxRestarts 2): a third is one too many.
    const loaded = { ...replacing, faults: [NOW - 2000, NOW - 1000] }
    const r = run(run(loaded, { type: 'predecessor-exit', exit: crash }).model, { type: 'start-ack' })
    assert.ok(does(r.effects).includes('log:worker.crash-loop'))
    assert.ok(does(r.effects).includes('escalate'))
    // Within it: counted, no escalation.
    const once = run(run(replacing, { type: 'predecessor-exit', exit: crash }).model, { type: 'start-ack' })
    assert.ok(!does(once.effects).includes('escalate'))
  })
  test('the predecessor announces its crash and the successor serves before its exit: the crash counts all the same', () => {
    const dying = run(replacing, { type: 'predecessor-dying' }).model
    const up = run(dying, { type: 'start-ack' })
    assert.equal(up.model.state.tag, 'running')
    assert.deepEqual(up.model.faults, [NOW])
    assert.deepEqual(
      up.effects.filter((e) => e.do === 'count-restart'),
      [{ do: 'count-restart', reason: 'exception' }],
    )
    const loaded = run({ ...replacing, faults: [NOW - 2000, NOW - 1000] }, { type: 'predecessor-dying' })
    assert.ok(does(run(loaded.model, { type: 'start-ack' }).effects).includes('escalate'))
  })
  test('the predecessor announces its crash while the successor starts: its port is held until the successor serves', () => {
    const r = run(replacing, { type: 'predecessor-dying' })
    assert.equal(r.model.state.tag, 'replacing')
    assert.equal(r.model.holding, true)
    assert.deepEqual(does(r.effects), ['board', 'hold-ports'])
    const gone = run(r.model, { type: 'predecessor-exit', exit: crash })
    assert.equal(gone.model.holding, true, 'held through its exit')
    const up = run(gone.model, { type: 'start-ack' })
    assert.equal(up.model.holding, false)
    assert.deepEqual(does(up.effects).slice(-1), ['release-ports'])
    // After the cancel nothing is held: the run is ending.
    assert.deepEqual(run(replacing, { type: 'predecessor-dying' }, { cancelled: true }).effects, [])
  })
  test('the predecessor is ending and the successor fails, or the run is cancelled: the hold is kept for its restart', () => {
    const dying = run(replacing, { type: 'predecessor-dying' }).model
    for (const ev of [
      { type: 'start-error', err: new Error('no') },
      { type: 'cancel' },
    ] satisfies SlotEvent[]) {
      const r = run(dying, ev)
      assert.equal(r.model.state.tag, 'dying', ev.type)
      assert.equal(r.model.holding, true, ev.type)
      assert.ok(!does(r.effects).some((d) => d === 'release-ports' || d === 'drop-ports'), ev.type)
      assert.ok(
        r.effects.some((e) => e.do === 'restore-predecessor'),
        ev.type,
      )
    }
    // Its exit: the restart policy, the port still held for the restart.
    const failed = run(dying, { type: 'start-error', err: new Error('no') })
    const gone = run(failed.model, { type: 'exit', exit: crash })
    assert.equal(gone.model.state.tag, 'backoff')
    assert.equal(gone.model.holding, true)
  })
  test('a recycle counts as a restart (reason recycled) but not as a fault', () => {
    const r = run(at({ tag: 'running', until: NOW }), { type: 'tick' }, { heapUsedBytes: 95 })
    assert.ok(r.effects.some((e) => e.do === 'count-restart' && e.reason === 'recycled'))
    const up = run(r.model, { type: 'start-ack' })
    assert.deepEqual(up.model.faults, [])
  })
  test('cancel or stop during a replacement: the successor winds down, the predecessor is the one stopped', () => {
    const c = run(replacing, { type: 'cancel' }, { budgetEnd: NOW + 2000 })
    assert.equal(c.model.state.tag, 'running')
    assert.ok(
      c.effects.some(
        (e) => e.do === 'restore-predecessor' && e.successor === 'retire' && e.deadlineMs === 2000,
      ),
    )
    const s = run(replacing, { type: 'stop', deadline: NOW + 700 })
    assert.deepEqual(s.model.state, { tag: 'stopping', until: NOW + 700 })
    assert.deepEqual(does(s.effects), ['settle-replace', 'restore-predecessor', 'board', 'send-shutdown'])
    // Said as the reload's outcome for that service: cancelled, not a successor that failed.
    for (const r of [c, s])
      assert.deepEqual(
        r.effects.find((e) => e.do === 'settle-replace'),
        { do: 'settle-replace', outcome: 'cancelled' },
      )
  })
})

describe('stopping', () => {
  const stopping = at({ tag: 'stopping', until: NOW + 1000 })
  const outcomeOf = (ev: SlotEvent, e: Partial<SlotEnv> = {}) => {
    const r = run(stopping, ev, e)
    if (r.model.state.tag === 'stopped') return settled(r.effects, 'settle-stop')?.outcome
    assert.equal(r.model.state.tag, 'terminating')
    assert.equal(r.effects.at(-1)?.do, 'terminate', 'whatever the answer, the thread is ended')
    return settled(
      run(r.model, { type: 'exit', exit: { reason: 'terminated', exitCode: 1 } }).effects,
      'settle-stop',
    )?.outcome
  }
  test('a clean ack is the only clean end', () => {
    assert.equal(outcomeOf({ type: 'shutdown-ack', timedOut: false }), 'clean')
  })
  test('an ack that cut tasks short is a timeout', () => {
    assert.equal(outcomeOf({ type: 'shutdown-ack', timedOut: true }), 'timeout')
  })
  test('an error reply is unclean, and the worker is terminated (it used to wait forever)', () => {
    assert.equal(outcomeOf({ type: 'shutdown-error', err: new Error('x') }), 'error')
  })
  test('the deadline terminates', () => {
    assert.equal(outcomeOf({ type: 'deadline' }), 'timeout')
  })
  test('the worker dying instead of answering is a crash', () => {
    assert.equal(outcomeOf({ type: 'exit', exit: crash }), 'crashed')
  })
  test('late start answers are ignored', () => {
    assert.equal(run(stopping, { type: 'start-ack' }).model, stopping)
  })
})

describe('terminating', () => {
  test('a thread that does not end within TERMINATE_MS is stuck: the stop ends, the supervisor is told', () => {
    const r = run(at({ tag: 'stopping', until: NOW }), { type: 'deadline' }, { budgetEnd: NOW + 60_000 })
    assert.deepEqual(r.model.state, {
      tag: 'terminating',
      after: 'stop',
      outcome: 'timeout',
      until: NOW + TERMINATE_MS,
      full: true,
      faultAfterCancel: false,
    })
    const stuck = run(r.model, { type: 'deadline' })
    assert.equal(settled(stuck.effects, 'settle-stop')?.outcome, 'stuck')
    assert.ok(does(stuck.effects).includes('stuck'), 'the supervisor is told not to wait for it')
  })
  test('the terminate deadline never passes the budget by more than TERMINATE_PAST_BUDGET_MS', () => {
    const r = run(at({ tag: 'stopping', until: NOW }), { type: 'deadline' }, { budgetEnd: NOW - 200 })
    assert.equal((r.model.state as { until: number }).until, NOW - 200 + TERMINATE_PAST_BUDGET_MS)
  })
  test('a stop whose terminate the budget cut short is not stuck: it ends as it was, the exit finds which are', () => {
    const r = run(at({ tag: 'stopping', until: NOW }), { type: 'deadline' }, { budgetEnd: NOW - 1000 })
    assert.equal((r.model.state as { until: number }).until, NOW, 'no time left')
    const late = run(r.model, { type: 'deadline' })
    assert.equal(settled(late.effects, 'settle-stop')?.outcome, 'timeout')
    assert.ok(!does(late.effects).includes('stuck'))
    assert.ok(!does(late.effects).includes('log:worker.stuck'))
  })
  test('a fault being terminated when the stop comes: the stop waits for the exit, clean if the fault came first', () => {
    const watchdog = run(at({ tag: 'running', until: NOW }), { type: 'deadline' }, { heartbeatMs: 0 })
    const stop = run(watchdog.model, { type: 'stop', deadline: NOW + 100 }, { cancelled: true })
    assert.equal(
      settled(run(stop.model, { type: 'exit', exit: crash }).effects, 'settle-stop')?.outcome,
      'clean',
    )
  })
})

describe('stopped', () => {
  test('a second stop settles with the same outcome', () => {
    const r = run(at({ tag: 'stopped', outcome: 'timeout' }), { type: 'stop', deadline: NOW })
    assert.equal(settled(r.effects, 'settle-stop')?.outcome, 'timeout')
  })
  test('nothing else moves it', () => {
    const s = at({ tag: 'stopped', outcome: 'clean' })
    for (const ev of [
      { type: 'exit', exit: crash },
      { type: 'deadline' },
      { type: 'cancel' },
      { type: 'tick' },
    ] satisfies SlotEvent[]) {
      assert.equal(run(s, ev).model, s)
    }
  })
})

describe('port hold: from a worker death to its successor', () => {
  const running = at({ tag: 'running', until: NOW })
  const holding = (state: SlotState, over: Partial<SlotModel> = {}) => at(state, { holding: true, ...over })

  test('an uncaught exception announced: not ready at once, the port is held while the thread ends', () => {
    const r = run(running, { type: 'dying' })
    assert.deepEqual(r.model.state, { tag: 'dying', until: NOW + TERMINATE_MS })
    assert.deepEqual(r.effects, [{ do: 'board', state: 'restarting' }, { do: 'hold-ports' }])
    assert.equal(r.model.holding, true)
  })
  test('after the cancel, nothing is held: the run is ending', () => {
    const r = run(running, { type: 'dying' }, { cancelled: true })
    assert.deepEqual(r.model.state, running.state)
    assert.deepEqual(r.effects, [])
  })
  test('death, restart at once, successor acknowledged: the held connections are handed over', () => {
    const dead = run(holding({ tag: 'dying', until: NOW + TERMINATE_MS }), { type: 'exit', exit: crash })
    assert.deepEqual(dead.model.state, { tag: 'backoff', until: NOW })
    assert.equal(dead.model.holding, true)
    assert.ok(!does(dead.effects).some((d) => d.endsWith('-ports')))
    const started = run(dead.model, { type: 'deadline' })
    assert.deepEqual(started.model.state, { tag: 'starting', boot: false, until: NOW + tuning.startTimeout })
    assert.equal(started.model.holding, true)
    const up = run(started.model, { type: 'start-ack' })
    assert.equal(up.model.state.tag, 'running')
    assert.equal(up.model.holding, false)
    assert.deepEqual(does(up.effects).slice(-1), ['release-ports'])
    assert.ok(does(up.effects).includes('log:worker.replaced'))
  })
  test('a short back-off keeps the hold; a long one, a crash loop or the run ending lets it go', () => {
    const dying = holding({ tag: 'dying', until: NOW + TERMINATE_MS })
    const short = run({ ...dying, faults: [NOW - 1000] }, { type: 'exit', exit: crash })
    assert.deepEqual([short.model.state.tag, short.model.holding], ['backoff', true])
    const slow = { ...tuning, restartBackoff: 5000, restartBackoffMax: 10_000 }
    const long = run({ ...dying, faults: [NOW - 1000] }, { type: 'exit', exit: crash }, { tuning: slow })
    assert.deepEqual([long.model.state.tag, long.model.holding], ['backoff', false])
    assert.deepEqual(does(long.effects).slice(-1), ['drop-ports'])
    const loop = run({ ...dying, faults: [NOW - 2000, NOW - 1000] }, { type: 'exit', exit: crash })
    assert.deepEqual([loop.model.state.tag, loop.model.holding], ['down', false])
    assert.ok(does(loop.effects).includes('drop-ports'))
    const cancelled = run(holding({ tag: 'backoff', until: NOW + 50 }), { type: 'cancel' })
    assert.deepEqual([cancelled.model.state.tag, cancelled.model.holding], ['down', false])
    assert.deepEqual(does(cancelled.effects).slice(-1), ['drop-ports'])
  })
  // A crash before the cancel was the restart policy's: the shutdown after it is clean, as for a
  // worker already in back-off, whichever of its exit, the cancel and the stop comes first.
  test('a stop while dying: terminated, the hold let go, the crash logged once, a clean stop', () => {
    const r = run(holding({ tag: 'dying', until: NOW + TERMINATE_MS }), { type: 'stop', deadline: NOW + 500 })
    assert.equal(r.model.state.tag, 'terminating')
    assert.ok(does(r.effects).includes('drop-ports'))
    const gone = run(r.model, { type: 'exit', exit: crash })
    assert.equal(settled(gone.effects, 'settle-stop')?.outcome, 'clean')
    const logged = [...does(r.effects), ...does(gone.effects)].filter((d) => d === 'log:worker.crashed')
    assert.equal(logged.length, 1)
  })
  test('dying, then the cancel, then its exit or its deadline: the stop is clean', () => {
    const dying = holding({ tag: 'dying', until: NOW + TERMINATE_MS })
    const exited = run(dying, { type: 'exit', exit: crash }, { cancelled: true })
    assert.ok(does(exited.effects).includes('log:worker.crashed'))
    assert.deepEqual(exited.model.state, { tag: 'down', outcome: 'clean', exit: crash })
    const late = run(dying, { type: 'deadline' }, { cancelled: true })
    assert.equal(late.model.state.tag, 'terminating')
    const stop = run(late.model, { type: 'stop', deadline: NOW + 500 }, { cancelled: true })
    const ended = run(stop.model, { type: 'exit', exit: crash }, { cancelled: true })
    assert.equal(settled(ended.effects, 'settle-stop')?.outcome, 'clean')
    const logged = [late, stop, ended]
      .flatMap((r) => does(r.effects))
      .filter((d) => d === 'log:worker.crashed')
    assert.equal(logged.length, 1, 'the crash is logged once, at its exit')
  })
  test('a dying thread the stop ends is stuck: its crash is logged still, and the stop is stuck', () => {
    const stop = run(
      at({ tag: 'dying', until: NOW + TERMINATE_MS }),
      { type: 'stop', deadline: NOW + 500 },
      { cancelled: true },
    )
    const stuck = run(stop.model, { type: 'deadline' }, { cancelled: true })
    assert.ok(does(stuck.effects).includes('log:worker.crashed'))
    assert.ok(does(stuck.effects).includes('log:worker.stuck'))
    assert.equal(settled(stuck.effects, 'settle-stop')?.outcome, 'stuck')
  })
  test('a thread the watchdog is ending when the stop comes: its crash is logged at its exit', () => {
    const ending = run(
      at({ tag: 'running', until: NOW }),
      { type: 'deadline' },
      { heartbeatMs: NOW - 60_000 },
    )
    assert.equal(ending.model.state.tag, 'terminating')
    const stop = run(ending.model, { type: 'stop', deadline: NOW + 500 }, { cancelled: true })
    const ended = run(
      stop.model,
      { type: 'exit', exit: { reason: 'watchdog', exitCode: 1 } },
      { cancelled: true },
    )
    assert.ok(does(ended.effects).includes('log:worker.crashed'))
    assert.equal(settled(ended.effects, 'settle-stop')?.outcome, 'clean')
  })
  test('announced its death and did not die: terminated at the deadline, the hold kept for the restart', () => {
    const r = run(holding({ tag: 'dying', until: NOW }), { type: 'deadline' })
    assert.equal(r.model.state.tag, 'terminating')
    assert.deepEqual(r.effects.at(-1), { do: 'terminate', reason: 'exception' })
    assert.equal(r.model.holding, true)
  })
  test('a blocked loop: the port is held before the watchdog terminates the thread', () => {
    const r = run(running, { type: 'deadline' }, { heartbeatMs: NOW - 10_000 })
    assert.deepEqual(does(r.effects).slice(-2), ['hold-ports', 'terminate'])
    assert.equal(r.model.holding, true)
    const late = run(running, { type: 'deadline' }, { heartbeatMs: NOW - 10_000, cancelled: true })
    assert.ok(!does(late.effects).includes('hold-ports'))
  })
  test('a restart that fails keeps the hold through its own back-off', () => {
    const restart = holding({ tag: 'starting', boot: false, until: NOW + 1000 }, { faults: [NOW - 10] })
    const failed = run(restart, { type: 'start-error', err: new Error('no') })
    assert.deepEqual([failed.model.state.tag, failed.model.holding], ['terminating', true])
    const next = run(failed.model, { type: 'exit', exit: crash })
    assert.deepEqual([next.model.state.tag, next.model.holding], ['backoff', true])
  })
})
