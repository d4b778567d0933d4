import { setTimeout as sleep } from 'node:timers/promises'
import type { TaskBody } from './task-group.js'

/**
 * A task that runs `tick` after `delayMs(0)`, then every `delayMs(n)` until shutdown. The wait is
 * aborted by shutdown; a tick in progress is allowed to finish (it gets the abort signal). A delay
 * of 0 or less means the timer is disabled (as SIA's intervals): the task only waits for shutdown.
 */
export function timerTask(
  delayMs: (iteration: number) => number,
  tick: (signal: AbortSignal) => Promise<void> | void,
): TaskBody {
  return async ({ signal }) => {
    for (let i = 0; !signal.aborted; i++) {
      const ms = delayMs(i)
      if (!(ms > 0)) {
        await aborted(signal)
        break
      }
      try {
        await sleep(ms, undefined, { signal, ref: true })
      } catch {
        break // aborted while waiting
      }
      await tick(signal)
    }
    return undefined
  }
}

/** Resolves once `signal` aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve()
  return new Promise((r) => signal.addEventListener('abort', () => r(), { once: true }))
}
