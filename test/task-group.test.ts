import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { createLogger } from '../shared/logger.js'
import { createTaskGroup } from '../shared/task-group.js'

/** The task group without a thread: when a task's own failure counts against its service. */

function group() {
  const failures: string[] = []
  const g = createTaskGroup({
    log: createLogger('token', 'silent'),
    beforeTask: async () => {},
    onFailure: (name) => void failures.push(name),
  })
  return { g, failures }
}

const failsSoon = async () => {
  await sleep(5)
  throw new Error('boom')
}

test('a task that fails while start() goes on is returned by seal(): the start has failed', async () => {
  const { g, failures } = group()
  await g.go('loop', failsSoon)
  await sleep(20) // start() still going on
  const failed = g.seal()
  assert.equal(failed?.name, 'loop')
  assert.equal((failed?.err as Error | undefined)?.message, 'boom')
  assert.deepEqual(failures, [], 'not reported as a failure of the running service')
})

test('a task that fails once the service runs is a failure of the service; after shutdown, neither', async () => {
  const { g, failures } = group()
  await g.go('loop', failsSoon)
  assert.equal(g.seal(), undefined)
  await sleep(20)
  assert.deepEqual(failures, ['loop'])

  const quiet = group()
  await quiet.g.go('loop', async (t) => {
    await new Promise((r) => t.signal.addEventListener('abort', r, { once: true }))
    throw new Error('ended by the shutdown')
  })
  assert.equal(quiet.g.seal(), undefined)
  await quiet.g.shutdown(Number.POSITIVE_INFINITY)
  assert.deepEqual(quiet.failures, [])
})
