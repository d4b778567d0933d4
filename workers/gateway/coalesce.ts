import { sliceClock } from '../../shared/slices.js'

/**
 * Calls made in one turn of the event loop are handed to `flush` together, once the turn's I/O
 * callbacks have run (setImmediate): every request whose body completed in that turn shares one
 * command to the store instead of one each. A call waits until the end of its turn (behind
 * groups that filled a slice of the loop, a turn more for each slice).
 * A group holds at most `maxWeight` (a call heavier than that goes alone); `flush` answers one
 * result per call, in order, or rejects, and then every call of the group rejects with its error.
 * Groups are flushed in order, in slices of the loop (SLICE_MS).
 */
export function coalesce<A, R>(
  flush: (args: readonly A[]) => Promise<readonly R[]>,
  weightOf: (arg: A) => number,
  maxWeight: number,
): (arg: A) => Promise<R> {
  interface Call {
    arg: A
    resolve(r: R): void
    reject(err: unknown): void
  }
  const queue: Call[] = []
  let scheduled = false

  const send = (group: Call[]) =>
    flush(group.map((c) => c.arg)).then(
      (results) => {
        for (const [i, c] of group.entries()) c.resolve(results[i]!)
      },
      (err: unknown) => {
        for (const c of group) c.reject(err)
      },
    )

  // Groups go in order, as many as fit in a slice of the loop (a flush encodes its command
  // before it returns), and at least one: a 12,000-alert batch is a dozen groups, and the loop
  // turns between them. A drain is scheduled only with calls queued.
  const drain = () => {
    const clock = sliceClock()
    do {
      let n = 1
      let weight = weightOf(queue[0]!.arg)
      for (; n < queue.length; n++) {
        const w = weightOf(queue[n]!.arg)
        if (weight + w > maxWeight) break
        weight += w
      }
      void send(queue.splice(0, n))
    } while (queue.length > 0 && !clock.due())
    if (queue.length > 0) setImmediate(drain)
    else scheduled = false
  }

  return (arg) =>
    new Promise<R>((resolve, reject) => {
      queue.push({ arg, resolve, reject })
      if (scheduled) return
      scheduled = true
      setImmediate(drain)
    })
}
