/**
 * Calls made in one turn of the event loop are handed to `flush` together, once the turn's I/O
 * callbacks have run (setImmediate): every request whose body completed in that turn shares one
 * command to the store instead of one each. A call waits at most until the end of its turn.
 * A group holds at most `maxWeight` (a call heavier than that goes alone); `flush` answers one
 * result per call, in order, or rejects, and then every call of the group rejects with its error.
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
  let queue: Call[] = []

  const send = (group: Call[]) =>
    flush(group.map((c) => c.arg)).then(
      (results) => {
        for (const [i, c] of group.entries()) c.resolve(results[i]!)
      },
      (err: unknown) => {
        for (const c of group) c.reject(err)
      },
    )

  const drain = () => {
    const calls = queue
    queue = []
    let group: Call[] = []
    let weight = 0
    for (const c of calls) {
      const w = weightOf(c.arg)
      if (group.length > 0 && weight + w > maxWeight) {
        void send(group)
        group = []
        weight = 0
      }
      group.push(c)
      weight += w
    }
    void send(group)
  }

  return (arg) =>
    new Promise<R>((resolve, reject) => {
      if (queue.length === 0) setImmediate(drain)
      queue.push({ arg, resolve, reject })
    })
}
