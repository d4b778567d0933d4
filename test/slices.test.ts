import assert from 'node:assert/strict'
import { test } from 'node:test'
import { eachSliced, forEachSliced, mapSliced, SLICE_MS } from '../shared/slices.js'

/** Busy-waits `ms`: an item whose work is longer than a slice. */
function spin(ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end);
}

/**
 * Counts the turns of the loop (setImmediate) while `work` is awaited; `work` is given the count
 * so far. Resolves with the turns that ran.
 */
async function turnsDuring(work: (turn: () => number) => Promise<unknown>): Promise<number> {
  let turns = 0
  let counting = true
  const tick = () => {
    if (!counting) return
    turns++
    setImmediate(tick)
  }
  setImmediate(tick)
  await work(() => turns)
  counting = false
  return turns
}

test('mapSliced keeps the order of the items, in one slice and across several', async () => {
  assert.deepEqual(await mapSliced([], (x: number) => x), [])
  assert.deepEqual(await mapSliced([1, 2, 3], (x, i) => x * 10 + i), [10, 21, 32])
  const long = await mapSliced([1, 2, 3, 4], (x) => {
    spin(SLICE_MS / 2 + 1)
    return x
  })
  assert.deepEqual(long, [1, 2, 3, 4])
})

test('work that fits in one slice never waits a turn of the loop', async () => {
  assert.equal(await turnsDuring(() => mapSliced([1, 2, 3], (x) => x)), 0)
  assert.equal(await turnsDuring(() => forEachSliced([1, 2, 3], () => {})), 0)
})

test('work longer than a slice lets the loop turn between slices, one item a slice at least', async () => {
  const seen: number[] = []
  const turns = await turnsDuring(() =>
    forEachSliced([0, 1, 2], (x) => {
      seen.push(x)
      spin(SLICE_MS + 1)
    }),
  )
  assert.deepEqual(seen, [0, 1, 2])
  assert.ok(turns >= 2, `expected a turn between each of the three slices, saw ${turns}`)
})

test('a throw in the first slice or a later one rejects, never throws', async () => {
  const boom = new Error('boom')
  const first = mapSliced([1], () => {
    throw boom
  })
  assert.ok(first instanceof Promise)
  await assert.rejects(first, boom)
  const later = forEachSliced([0, 1], (x) => {
    spin(SLICE_MS + 1)
    if (x === 1) throw boom
  })
  await assert.rejects(later, boom)
})

test('lanes share one slice: a turn of the loop runs one slice of work, however many lanes run', async () => {
  // Each item is 1 ms of synchronous work before its first await (a local signature); 8 lanes.
  const perTurn = new Map<number, number>()
  const items = Array.from({ length: 120 }, (_, i) => i)
  const done: number[] = []
  await turnsDuring((turn) =>
    eachSliced(items, 8, async (i) => {
      perTurn.set(turn(), (perTurn.get(turn()) ?? 0) + 1)
      spin(1)
      done.push(i)
    }),
  )
  assert.deepEqual(
    done.toSorted((a, b) => a - b),
    items,
  )
  // A slice holds SLICE_MS of items and the one that crosses it; eight lanes each taking a slice
  // of their own in the same turn would be ~8 × SLICE_MS items.
  const most = Math.max(...perTurn.values())
  assert.ok(most <= 2 * SLICE_MS, `${most} items of 1 ms ran in one turn of the loop`)
})
