import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createLogger } from '../shared/logger.js'
import { Registry } from '../shared/prom.js'
import { createWatchedSlot } from '../shared/watched-slot.js'

/** shared/watched-slot.ts: one at a time, said when stuck, left by callers whose signal aborts. */
const log = createLogger('certificate', 'silent')
const gauge = () => ({ registry: new Registry(), name: 'x_stuck_seconds', help: 'stuck' })

/** A logger whose warnings and errors are kept, by event. */
function spying() {
  const said: string[] = []
  const spy = Object.assign(Object.create(log), {
    error: (o: { event: string }) => said.push(o.event),
    warn: (o: { event: string }) => said.push(o.event),
  })
  return { said, spy }
}

test('work that throws before its first await frees the slot and is never said to be stuck', async () => {
  const { said, spy } = spying()
  const slot = createWatchedSlot({ stuckAfterMs: 30, log: spy, event: 'x', what: 'a test', gauge: gauge() })
  const sync = (() => {
    throw new Error('at once')
  }) as unknown as (s: AbortSignal) => Promise<void>
  await assert.rejects(slot.run(sync, new AbortController().signal), /at once/)
  assert.equal(slot.busy(), false)
  await new Promise((r) => setTimeout(r, 60))
  assert.deepEqual(said, [])
})

test('a caller whose signal aborts stops waiting; the next waits for the work in the slot, which is said stuck and then unstuck', async () => {
  const { said, spy } = spying()
  const slot = createWatchedSlot({ stuckAfterMs: 20, log: spy, event: 'x', what: 'a test', gauge: gauge() })
  let finish: () => void = () => {}
  const hung = new Promise<void>((r) => {
    finish = r
  })
  const order: string[] = []
  const first = slot.run(() => hung.then(() => void order.push('first')), AbortSignal.timeout(5))
  await assert.rejects(first, { name: 'TimeoutError' })
  assert.equal(slot.busy(), true, 'the work stays in the slot')
  const second = slot.run(async () => void order.push('second'), new AbortController().signal)
  await new Promise((r) => setTimeout(r, 40))
  assert.deepEqual(said, ['x.stuck'])
  assert.ok(slot.stuckSeconds() > 0)
  finish()
  await second
  assert.deepEqual(order, ['first', 'second'])
  assert.deepEqual(said, ['x.stuck', 'x.unstuck'])
  assert.equal(slot.stuckSeconds(), 0)
})
