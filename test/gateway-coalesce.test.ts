import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setImmediate as turn } from 'node:timers/promises'
import { SLICE_MS } from '../shared/slices.js'
import { coalesce } from '../workers/gateway/coalesce.js'

/** The calls of one loop turn share one flush; each call still gets its own answer or error. */

function recorder(fail?: (args: readonly string[]) => boolean) {
  const flushes: string[][] = []
  const call = coalesce(
    async (args: readonly string[]) => {
      flushes.push([...args])
      if (fail?.(args)) throw new Error(`flush of ${args.join(',')} failed`)
      return args.map((a) => a.toUpperCase())
    },
    (a) => a.length,
    4,
  )
  return { flushes, call }
}

test('calls of one turn go in one flush, in order, each answered with its own result', async () => {
  const { flushes, call } = recorder()
  const answers = await Promise.all([call('a'), call('b'), call('c')])
  assert.deepEqual(answers, ['A', 'B', 'C'])
  assert.deepEqual(flushes, [['a', 'b', 'c']])
})

test('calls of different turns go in different flushes', async () => {
  const { flushes, call } = recorder()
  const first = call('a')
  await turn()
  const second = call('b')
  assert.deepEqual(await Promise.all([first, second]), ['A', 'B'])
  assert.deepEqual(flushes, [['a'], ['b']])
})

test('a group holds at most maxWeight; a heavier call goes alone', async () => {
  const { flushes, call } = recorder()
  await Promise.all([call('aa'), call('bb'), call('c'), call('heavy'), call('d')])
  assert.deepEqual(flushes, [['aa', 'bb'], ['c'], ['heavy'], ['d']])
})

test("a failed flush rejects every call of its group, and only that group's", async () => {
  const { call } = recorder((args) => args.includes('bad'))
  // 'aaa' and 'bad' weigh 6 > 4: two groups, ['aaa'] and ['bad', 'x'].
  const settled = await Promise.allSettled([call('aaa'), call('bad'), call('x')])
  assert.deepEqual(
    settled.map((s) => s.status),
    ['fulfilled', 'rejected', 'rejected'],
  )
  assert.match(String((settled[1] as PromiseRejectedResult).reason), /flush of bad,x failed/)
  assert.equal(await call('after'), 'AFTER', 'the next turn flushes anew')
})

test('groups that take longer than a slice of the loop are flushed a turn apart, in order', async () => {
  const events: string[] = []
  const call = coalesce(
    async (args: readonly string[]) => {
      events.push(args.join(','))
      // A flush encodes its command before it returns: here, a little longer than a slice.
      const until = performance.now() + SLICE_MS + 2
      while (performance.now() < until);
      return args
    },
    () => 1,
    1,
  )
  const answers = Promise.all([call('a'), call('b'), call('c')])
  setImmediate(() => events.push('turn'))
  assert.deepEqual(await answers, ['a', 'b', 'c'])
  assert.deepEqual(events, ['a', 'turn', 'b', 'c'])
})
