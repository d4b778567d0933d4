import { performance } from 'node:perf_hooks'

/**
 * A worker's loop is shared by every request: a large piece of work (a batch of thousands of
 * alerts, a refresh of thousands of tokens) is worked through in slices of at most SLICE_MS, and
 * the loop turns (setImmediate: timers, I/O, other requests) between them. Small work fits in one
 * slice and never waits.
 */
export const SLICE_MS = 8

const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

/**
 * A clock for one piece of work: `due()` is true once the current slice has run SLICE_MS. Every
 * caller of `yield()` until the next turn of the loop waits for that same turn, where the slice
 * restarts once: lanes of one piece of work (eachSliced) share its slice, never a slice each. Methods,
 * not arrow properties: the bundles keep function names (scripts/bundle.mjs), and a named arrow
 * made per call costs a `defineProperty` each time (~5% of a one-alert webhook's CPU, which makes
 * eight clocks).
 */
export function sliceClock(): { due(): boolean; yield(): Promise<void> } {
  let start = performance.now()
  let turning: Promise<void> | undefined
  return {
    due() {
      return performance.now() - start >= SLICE_MS
    },
    yield() {
      turning ??= turn().then(() => {
        turning = undefined
        start = performance.now()
      })
      return turning
    },
  }
}

/**
 * `fn` over every item, in order, yielding between slices. A slice holds at least one item: on a
 * loaded machine the thread may lose its core between the clock's start and the first item, and
 * a yield then would only cost a small batch a turn of the loop.
 */
export async function forEachSliced<T>(
  items: readonly T[],
  fn: (item: T, index: number) => void,
): Promise<void> {
  const clock = sliceClock()
  for (let i = 0; i < items.length; i++) {
    if (i > 0 && clock.due()) await clock.yield()
    fn(items[i] as T, i)
  }
}

/** `fn` over every item, in order, yielding between slices: the results, in the items' order. */
export async function mapSliced<T, U>(items: readonly T[], fn: (item: T, index: number) => U): Promise<U[]> {
  const out = new Array<U>(items.length)
  await forEachSliced(items, (item, i) => {
    out[i] = fn(item, i)
  })
  return out
}

/**
 * `fn` over every item, at most `lanes` at once, starting none once `signal` is aborted. The time
 * `fn` spends before its first await (and in the microtasks it resolves in: a local signature) is
 * counted in the slice, so even synchronous work yields every SLICE_MS.
 */
export async function eachSliced<T>(
  items: readonly T[],
  lanes: number,
  fn: (item: T) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  const clock = sliceClock()
  let next = 0
  const lane = async () => {
    for (;;) {
      // After a turn, the lane first to run takes the slice; the others wait for the next turn.
      while (clock.due()) await clock.yield()
      if (next >= items.length || signal?.aborted) return
      const item = items[next++] as T
      await fn(item).catch(() => {}) // `fn` accounts for its own failures
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(lanes, items.length)) }, lane))
}
