import { threadId } from 'node:worker_threads'
import { monotonicMs } from './clock.js'

/**
 * A lock between threads in one cell of a SharedArrayBuffer: the cell holds the id of its holder
 * (its thread id + 1), negated once another waits for it, 0 when free. For what two generations
 * of a worker share while one drains and the other serves (the gateway's sink file), and for
 * stdout, which every thread writes (stdout-sink.ts). A holder that ends without releasing (a
 * crash, a terminate) is freed by the supervisor when it sees the thread end (`releaseHeldBy`).
 */
export interface ThreadLock {
  /**
   * Resolves with the release once this thread holds the lock. The release says whether another
   * waited: the holder should then yield a turn before taking it again, or a busy holder could
   * take it back each time before the waiter wakes.
   */
  acquire(): Promise<() => boolean>
  /**
   * As `acquire`, for a caller that cannot wait for a promise (a log line, written synchronously):
   * blocks this thread until it holds the lock, until `until` (monotonic ms), or until
   * `giveUp()`, asked before each wait and after each wake-up, says to stop; then undefined.
   */
  acquireSync(until: number, giveUp: () => boolean): (() => boolean) | undefined
}

/** How long a wait sleeps before it looks again (a release wakes it; this is a backstop). */
const RECHECK_MS = 1000

export function threadLock(cells: Int32Array, index: number, me = threadId + 1): ThreadLock {
  const release = (): boolean => {
    // Nobody waited: one compare-and-swap, no wake-up.
    if (Atomics.compareExchange(cells, index, me, 0) === me) return false
    Atomics.compareExchange(cells, index, -me, 0)
    Atomics.notify(cells, index)
    return true
  }
  return {
    async acquire() {
      for (;;) {
        const held = Atomics.compareExchange(cells, index, 0, me)
        if (held === 0) return release
        // Marked as waited for, so that its release wakes this thread; changed meanwhile: again.
        const marked = held < 0 ? held : -held
        if (held > 0 && Atomics.compareExchange(cells, index, held, marked) !== held) continue
        const w = Atomics.waitAsync(cells, index, marked, RECHECK_MS)
        if (w.async) await w.value
      }
    },
    acquireSync(until, giveUp) {
      for (;;) {
        const held = Atomics.compareExchange(cells, index, 0, me)
        if (held === 0) return release
        const left = until - monotonicMs()
        if (left <= 0 || giveUp()) return undefined
        const marked = held < 0 ? held : -held
        if (held > 0 && Atomics.compareExchange(cells, index, held, marked) !== held) continue
        Atomics.wait(cells, index, marked, Math.min(left, RECHECK_MS))
      }
    },
  }
}

/** Frees the lock if the thread `tid` (its `threadId`) holds it. */
export function releaseHeldBy(cells: Int32Array, index: number, tid: number): void {
  const id = tid + 1
  if (
    Atomics.compareExchange(cells, index, id, 0) === id ||
    Atomics.compareExchange(cells, index, -id, 0) === -id
  )
    Atomics.notify(cells, index)
}
