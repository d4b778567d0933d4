import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { decideRestart, type RestartTuning } from '../supervisor/restart-policy.js'
import type { WorkerExit } from '../supervisor/worker-handle.js'

const tuning: RestartTuning = {
  restart: 'permanent',
  maxRestarts: 5,
  restartWindow: 60_000,
  restartBackoff: 100,
  restartBackoffMax: 15_000,
}
const crash: WorkerExit = { reason: 'exception', exitCode: 1 }
const NOW = 1_000_000
/** `n` earlier faults, one a second before now. */
const faults = (n: number) => Array.from({ length: n }, (_, i) => NOW - (n - i) * 1000)
const top = () => 1 // Math.random at its largest: the full ceiling
const bottom = () => 0 // at its smallest: half the ceiling

describe('decideRestart', () => {
  test('permanent restarts after every kind of fault, exit 0 included', () => {
    for (const exit of [
      crash,
      { reason: 'oom', exitCode: 1 },
      { reason: 'watchdog', exitCode: 1 },
      { reason: 'exit', exitCode: 0 },
      { reason: 'exit', exitCode: 3 },
    ] satisfies WorkerExit[]) {
      assert.equal(decideRestart(tuning, exit, [], NOW).action, 'restart', exit.reason)
    }
  })

  test('transient stays down after a normal exit (code 0) and restarts after an abnormal one', () => {
    const t = { ...tuning, restart: 'transient' as const }
    assert.deepEqual(decideRestart(t, { reason: 'exit', exitCode: 0 }, [], NOW), { action: 'stay-down' })
    assert.equal(decideRestart(t, { reason: 'exit', exitCode: 2 }, [], NOW).action, 'restart')
    assert.equal(decideRestart(t, crash, [], NOW).action, 'restart')
    assert.equal(decideRestart(t, { reason: 'oom', exitCode: 1 }, [], NOW).action, 'restart')
  })

  test('temporary never restarts after a fault', () => {
    const t = { ...tuning, restart: 'temporary' as const }
    assert.deepEqual(decideRestart(t, crash, [], NOW), { action: 'stay-down' })
    assert.deepEqual(decideRestart(t, { reason: 'exit', exitCode: 1 }, [], NOW), { action: 'stay-down' })
  })

  test('intensity: maxRestarts faults within the window restart, the next one escalates', () => {
    for (let n = 0; n < 5; n++) {
      assert.equal(decideRestart(tuning, crash, faults(n), NOW).action, 'restart', `after ${n} faults`)
    }
    assert.deepEqual(decideRestart(tuning, crash, faults(5), NOW), { action: 'escalate' })
    assert.deepEqual(decideRestart({ ...tuning, maxRestarts: 0 }, crash, [], NOW), { action: 'escalate' })
  })

  test('faults older than restartWindow no longer count, and the back-off starts over', () => {
    const old = faults(5).map((t) => t - 60_000)
    assert.deepEqual(decideRestart(tuning, crash, old, NOW, top), {
      action: 'restart',
      attempt: 1,
      delayMs: 0,
    })
    // Half in, half out of the window: only the recent ones count.
    const mixed = [...old, NOW - 10, NOW - 5]
    assert.deepEqual(decideRestart(tuning, crash, mixed, NOW, top), {
      action: 'restart',
      attempt: 3,
      delayMs: 200,
    })
  })

  test('the first fault in a window restarts at once; back-off doubles from the second, capped at restartBackoffMax, with jitter down to half', () => {
    const t = { ...tuning, maxRestarts: 20 }
    const delays = Array.from({ length: 10 }, (_, n) => {
      const d = decideRestart(t, crash, faults(n), NOW, top)
      assert.equal(d.action, 'restart')
      return d.action === 'restart' ? [d.attempt, d.delayMs] : []
    })
    assert.deepEqual(delays, [
      [1, 0],
      [2, 100],
      [3, 200],
      [4, 400],
      [5, 800],
      [6, 1600],
      [7, 3200],
      [8, 6400],
      [9, 12_800],
      [10, 15_000],
    ])
    assert.deepEqual(decideRestart(t, crash, faults(3), NOW, bottom), {
      action: 'restart',
      attempt: 4,
      delayMs: 200,
    })
    assert.deepEqual(decideRestart(t, crash, [], NOW, bottom), { action: 'restart', attempt: 1, delayMs: 0 })
    const custom = { ...t, restartBackoff: 10, restartBackoffMax: 25 }
    assert.deepEqual(decideRestart(custom, crash, faults(4), NOW, top), {
      action: 'restart',
      attempt: 5,
      delayMs: 25,
    })
  })
})
