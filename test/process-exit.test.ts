import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createLogger } from '../shared/logger.js'
import { createProcessExit } from '../supervisor/exit.js'
import type { WorkerHandle } from '../supervisor/worker-handle.js'

/** A thread that ends when terminated. */
function thread(service: string): WorkerHandle {
  let alive = true
  let ended: () => void = () => {}
  const exited = new Promise<void>((resolve) => {
    ended = resolve
  })
  return {
    service,
    alive: () => alive,
    exited,
    terminate: async () => {
      alive = false
      ended()
    },
  } as unknown as WorkerHandle
}

async function exitCode(setup: (exit: ReturnType<typeof createProcessExit>) => void) {
  const codes: number[] = []
  const end = (code: number) => void codes.push(code)
  const exit = createProcessExit(createLogger('supervisor', 'silent'), {
    end: end as (code: number) => never,
  })
  setup(exit)
  await exit.leave(0, { cause: 'signal' })
  return codes
}

// (A thread still up at the exit makes it 1: lifecycle-faults.test, out of process.)
test('the exit: 0 when a thread once found stuck has ended since (it was only slow)', async () => {
  const slow = thread('gateway')
  assert.deepEqual(
    await exitCode((exit) => {
      exit.threads.add(thread('token'))
      exit.stuck(slow) // marked by its stop, then ended: no longer among the threads
    }),
    [0],
  )
})
