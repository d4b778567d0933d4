import { setTimeout as sleep } from 'node:timers/promises'
import type { TaskBody } from './task-group.js'

/**
 * Cuts a timer task's wait short when work is owed now rather than at the delay it waits out (the
 * token service's pass after the local authority changed). The task asks `delayMs` again, which
 * says what is owed: a wake while it ticks changes nothing, the delay asked after sees the same.
 */
export interface TimerWake {
  wake(): void
  /** The signal the task's next wait ends at (the task's, once per wait). */
  next(): AbortSignal
}

export function timerWake(): TimerWake {
  let current = new AbortController()
  return {
    wake: () => current.abort(),
    next() {
      current = new AbortController()
      return current.signal
    },
  }
}

/**
 * A task that runs `tick` after `delayMs(0)`, then every `delayMs(n)` until shutdown. The wait is
 * aborted by shutdown; a tick in progress is allowed to finish (it gets the abort signal). A delay
 * of 0 or less means the timer is disabled (as SIA's intervals): the task only waits for shutdown,
 * or for `wake`. A wake ends the wait under way and asks `delayMs` again.
 */
export function timerTask(
  delayMs: (iteration: number) => number,
  tick: (signal: AbortSignal) => Promise<void> | void,
  wake?: TimerWake,
): TaskBody {
  return async ({ signal }) => {
    let i = 0
    while (!signal.aborted) {
      const waitSignal = wake ? AbortSignal.any([signal, wake.next()]) : signal
      const ms = delayMs(i)
      if (!(ms > 0)) {
        await aborted(waitSignal)
        continue
      }
      try {
        await sleep(ms, undefined, { signal: waitSignal, ref: true })
      } catch {
        continue // shutdown (the loop ends) or a wake (the delay is asked again)
      }
      await tick(signal)
      i++
    }
    return undefined
  }
}

/** Resolves once `signal` aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve()
  return new Promise((r) => signal.addEventListener('abort', () => r(), { once: true }))
}
