import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Worker, type WorkerOptions } from 'node:worker_threads'
import { DEFAULT_RESOURCE_LIMITS } from '../shared/config/limits.js'
import { AWAIT_INIT } from '../shared/protocol.js'
import { prespawnWorkers } from '../supervisor/prespawn.js'

test('threads started ahead: each taken once with its default limits, ended when the limits differ or on discard', async () => {
  const started = new Map<string, { worker: Worker; exited: Promise<unknown> }>()
  const ahead = prespawnWorkers(3, (file: URL, options: WorkerOptions) => {
    const worker = new Worker(file, options)
    started.set(options.name!, { worker, exited: once(worker, 'exit') })
    assert.equal(options.workerData, AWAIT_INIT) // the init follows as a message
    assert.deepEqual(options.resourceLimits, DEFAULT_RESOURCE_LIMITS[options.name as 'token'])
    return worker
  })
  assert.deepEqual([...started.keys()], ['certificate', 'token', 'memory-reporter'])
  const alive = (name: string) => started.get(name)!.worker.threadId !== -1
  const ends = (name: string) =>
    Promise.race([
      started.get(name)!.exited,
      sleep(5000, undefined, { ref: false }).then(() => assert.fail(`the ${name} thread did not end`)),
    ])

  const certificate = ahead.take('certificate', DEFAULT_RESOURCE_LIMITS.certificate)
  assert.equal(certificate, started.get('certificate')!.worker)
  assert.equal(ahead.take('certificate', DEFAULT_RESOURCE_LIMITS.certificate), undefined, 'only once')
  assert.equal(ahead.take('gateway', DEFAULT_RESOURCE_LIMITS.gateway), undefined, 'never started ahead')

  // Other limits than the configuration's: the thread is not used, and ends.
  const other = { ...DEFAULT_RESOURCE_LIMITS.token, maxOldGenerationSizeMb: 48 }
  assert.equal(ahead.take('token', other), undefined)
  await ends('token')

  // Discard ends what was not taken; the taken thread lives on (it waits for its init).
  ahead.discard()
  await ends('memory-reporter')
  assert.ok(alive('certificate'))
  assert.equal(ahead.take('memory-reporter', DEFAULT_RESOURCE_LIMITS['memory-reporter']), undefined)
  await certificate!.terminate()
})

test('a thread that cannot be made (EAGAIN at the pids limit) is no head start, not a failed CLI: the run asks again', async () => {
  const made: Worker[] = []
  const ahead = prespawnWorkers(3, (file: URL, options: WorkerOptions) => {
    if (made.length === 1) throw Object.assign(new Error('EAGAIN'), { code: 'ERR_WORKER_INIT_FAILED' })
    const worker = new Worker(file, options)
    made.push(worker)
    return worker
  })
  assert.equal(made.length, 1, 'none tried after the first refusal')
  assert.equal(ahead.take('token', DEFAULT_RESOURCE_LIMITS.token), undefined)
  const certificate = ahead.take('certificate', DEFAULT_RESOURCE_LIMITS.certificate)
  assert.equal(certificate, made[0])
  await certificate!.terminate()
})
