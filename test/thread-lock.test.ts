import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Worker } from 'node:worker_threads'
import { releaseHeldBy, threadLock } from '../shared/thread-lock.js'

/** shared/thread-lock.ts: one holder at a time across threads; a holder that ends is freed by whoever sees it end. */
const holder = `
  const { workerData, parentPort } = require('node:worker_threads')
  const cells = new Int32Array(workerData)
  // Takes the lock as thread-lock.ts does (its thread id + 1), says so, and never releases it.
  const me = require('node:worker_threads').threadId + 1
  if (Atomics.compareExchange(cells, 0, 0, me) !== 0) throw new Error('the lock was not free')
  parentPort.postMessage('held')
  setInterval(() => {}, 1000)
`

test('a lock held by a thread that ended is freed by releaseHeldBy, and a waiter gets it at once', async (t) => {
  const buffer = new SharedArrayBuffer(4)
  const cells = new Int32Array(buffer)
  const worker = new Worker(holder, { eval: true, workerData: buffer })
  t.after(() => worker.terminate())
  await new Promise((r) => worker.once('message', r))
  const tid = worker.threadId
  const lock = threadLock(cells, 0)
  let got = false
  const waiting = lock.acquire().then((release) => {
    got = true
    return release
  })
  await new Promise((r) => setTimeout(r, 50))
  assert.equal(got, false, 'held by the other thread')
  releaseHeldBy(cells, 0, tid + 1) // another thread's id: not the holder, nothing freed
  await new Promise((r) => setTimeout(r, 50))
  assert.equal(got, false)
  await worker.terminate()
  releaseHeldBy(cells, 0, tid)
  const release = await waiting
  assert.equal(got, true)
  assert.notEqual(Atomics.load(cells, 0), 0)
  assert.equal(release(), false, 'nobody waited')
  assert.equal(Atomics.load(cells, 0), 0, 'released')
})

test('in one thread too, a second acquire waits for the first release', async () => {
  const lock = threadLock(new Int32Array(new SharedArrayBuffer(4)), 0)
  const order: string[] = []
  const first = await lock.acquire()
  const second = lock.acquire().then((release) => {
    order.push('second')
    release()
  })
  await new Promise((r) => setTimeout(r, 20))
  order.push('first released')
  assert.equal(first(), true, 'the release says another waited')
  await second
  assert.deepEqual(order, ['first released', 'second'])
})
