import { performance } from 'node:perf_hooks'

/**
 * The gateway's loop is shared by every request: a large batch (thousands of alerts) is worked
 * through in slices of at most SLICE_MS, and the loop turns (setImmediate: timers, I/O, other
 * requests) between them. A small batch fits in one slice and never waits.
 */
export const SLICE_MS = 8

const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

/** A clock for one piece of work: `due()` is true once the current slice has run SLICE_MS. */
export function sliceClock(): { due(): boolean; yield(): Promise<void> } {
  let start = performance.now()
  return {
    due: () => performance.now() - start >= SLICE_MS,
    async yield() {
      await turn()
      start = performance.now()
    },
  }
}

/** `fn` over every item, in order, yielding between slices. */
export async function mapSliced<T, U>(items: readonly T[], fn: (item: T, index: number) => U): Promise<U[]> {
  const clock = sliceClock()
  const out = new Array<U>(items.length)
  for (let i = 0; i < items.length; i++) {
    if (clock.due()) await clock.yield()
    out[i] = fn(items[i] as T, i)
  }
  return out
}
