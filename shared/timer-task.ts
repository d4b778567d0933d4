import { setTimeout as sleep } from 'node:timers/promises'
import type { TaskBody } from './task-group.js'

/**
 * A task that runs `tick` after `delayMs(0)`, then every `delayMs(n)` until shutdown. The wait is
 * aborted by shutdown; a tick in progress is allowed to finish (it gets the abort signal).
 */
export function timerTask(
  delayMs: (iteration: number) => number,
  tick: (signal: AbortSignal) => Promise<void> | void,
): TaskBody {
  return async ({ signal }) => {
    for (let i = 0; !signal.aborted; i++) {
      try {
        await sleep(delayMs(i), undefined, { signal, ref: true })
      } catch {
        break // aborted while waiting
      }
      await tick(signal)
    }
    return undefined
  }
}
