import { codedError } from './errors.js'
import type { Logger } from './logger.js'

/**
 * The WaitGroup of the Go original: every timer, server and loop of a service is a named task,
 * created only during `start()`; `shutdown()` aborts them all and waits for every one to finish.
 */
export interface TaskContext {
  /** Aborted when the service shuts down. */
  signal: AbortSignal
  /** When the task must have stopped (on shared/clock.ts's clock); set once `signal` is aborted. */
  deadline(): number
  /** For tasks created with `waitReady`: the task is up (a server is listening). */
  ready(): void
}

/** A task body resolves 'timed-out' when it had to cut work short at the deadline. */
export type TaskBody = (t: TaskContext) => Promise<undefined | 'timed-out'>

export interface TaskGroup {
  readonly signal: AbortSignal
  /**
   * Creates a task. Resolves once it runs, or, with `waitReady`, once it calls `ready()`; rejects
   * if it fails before that (a server that cannot listen fails its service's start).
   */
  go(name: string, body: TaskBody, opts?: { waitReady?: boolean }): Promise<void>
  /**
   * After start(): no task may be created any more. Returns the first task that failed on its
   * own before (after its `go()` resolved, while start() went on): the start has then failed.
   */
  seal(): { name: string; err: unknown } | undefined
  size(): number
  /** Aborts every task and waits for all of them. True if any had to be cut short. */
  shutdown(deadline: number): Promise<boolean>
}

export interface TaskGroupOptions {
  log: Logger
  /** Awaited just before a task is created (the `before-task` failpoint). */
  beforeTask(name: string): Promise<void>
  /** A task failed on its own while the service was running: the worker must not limp on. */
  onFailure(name: string, err: unknown): void
}

export function createTaskGroup({ log, beforeTask, onFailure }: TaskGroupOptions): TaskGroup {
  const controller = new AbortController()
  const running = new Set<Promise<boolean>>()
  let deadline = Number.POSITIVE_INFINITY
  let sealed = false
  let failedEarly: { name: string; err: unknown } | undefined

  return {
    signal: controller.signal,
    size: () => running.size,
    seal() {
      sealed = true
      return failedEarly
    },
    async go(name, body, opts = {}) {
      if (sealed) throw codedError('ERR_TASK_OUTSIDE_START', `task "${name}" must be created in start()`)
      await beforeTask(name)
      if (controller.signal.aborted) return // shut down while the failpoint held us: create nothing
      let markReady!: () => void
      const ready = new Promise<void>((resolve) => {
        markReady = resolve
      })
      const t: TaskContext = { signal: controller.signal, deadline: () => deadline, ready: markReady }
      log.info({ event: 'service.task.started', task: name }, `task ${name} started`)
      const done = body(t).then(
        (result) => {
          log.info({ event: 'service.task.stopped', task: name }, `task ${name} stopped`)
          return result === 'timed-out'
        },
        (err: unknown) => {
          log.info({ event: 'service.task.stopped', task: name, err }, `task ${name} stopped with an error`)
          if (controller.signal.aborted) throw err
          if (sealed) onFailure(name, err)
          else failedEarly ??= { name, err }
          throw err
        },
      )
      const tracked = done.catch(() => false)
      running.add(tracked)
      void tracked.then(() => running.delete(tracked))
      if (opts.waitReady) await Promise.race([ready, done])
    },
    async shutdown(at) {
      deadline = at
      sealed = true
      controller.abort()
      const results = await Promise.all(running)
      return results.some(Boolean)
    },
  }
}
