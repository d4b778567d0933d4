import { monotonicMs } from './clock.js'

/** One run of some work at a time, shared by whoever asks while it is under way. */
export interface SingleFlight<T> {
  /**
   * The run under way, or a new one if none is: its value (or its error), or `undefined` once
   * `until` (shared/clock.ts) has passed first.
   */
  join(until?: number): Promise<T | undefined>
}

interface Waiter<T> {
  resolve(value: T | undefined): void
  reject(err: unknown): void
  timer?: NodeJS.Timeout
}

/**
 * `run` at most once at a time. A waiter that gives up at its deadline leaves nothing behind: the
 * run holds one list of waiters, not a reaction per caller, so a run that never ends (a read of a
 * frozen volume) costs the one run however many ask, where a promise awaited by each kept every
 * asker's frames until the thread ended.
 */
export function createSingleFlight<T>(run: () => Promise<T>): SingleFlight<T> {
  let waiters: Set<Waiter<T>> | undefined
  const start = () => {
    const these = new Set<Waiter<T>>()
    waiters = these
    const settle = (fn: (w: Waiter<T>) => void) => {
      waiters = undefined
      for (const w of these) {
        clearTimeout(w.timer)
        fn(w)
      }
    }
    new Promise<T>((resolve) => resolve(run())).then(
      (value) => settle((w) => w.resolve(value)),
      (err: unknown) => settle((w) => w.reject(err)),
    )
    return these
  }
  return {
    join(until = Number.POSITIVE_INFINITY) {
      return new Promise<T | undefined>((resolve, reject) => {
        const these = waiters ?? start()
        const w: Waiter<T> = { resolve, reject }
        if (Number.isFinite(until)) {
          w.timer = setTimeout(
            () => {
              these.delete(w)
              resolve(undefined)
            },
            Math.max(0, until - monotonicMs()),
          )
        }
        these.add(w)
      })
    },
  }
}
