import { threadId } from 'node:worker_threads'

/**
 * A lock between threads in one cell of a SharedArrayBuffer: the cell holds the thread id of its
 * holder, 0 when free. For what two generations of a worker share while one drains and the other
 * serves (the gateway's sink file). A holder that ends without releasing (a crash, a terminate)
 * is freed by the supervisor when it sees the thread end (`releaseHeldBy`).
 */
export interface ThreadLock {
  /** Resolves with the release once this thread holds the lock. */
  acquire(): Promise<() => void>
}

/** How long a wait sleeps before it looks again (a release always notifies; this is a backstop). */
const RECHECK_MS = 1000

export function threadLock(cells: Int32Array, index: number, me = threadId + 1): ThreadLock {
  const release = () => {
    Atomics.compareExchange(cells, index, me, 0)
    Atomics.notify(cells, index)
  }
  return {
    async acquire() {
      for (;;) {
        const holder = Atomics.compareExchange(cells, index, 0, me)
        if (holder === 0) return release
        const w = Atomics.waitAsync(cells, index, holder, RECHECK_MS)
        if (w.async) await w.value
      }
    },
  }
}

/** Frees the lock if the thread `tid` (its `threadId`) holds it. */
export function releaseHeldBy(cells: Int32Array, index: number, tid: number): void {
  if (Atomics.compareExchange(cells, index, tid + 1, 0) === tid + 1) Atomics.notify(cells, index)
}
