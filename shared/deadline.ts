/**
 * `work`, bounded: settles as it does, or rejects with `timedOut()` once `ms` have passed,
 * whichever comes first; `work`'s signal aborts at that deadline (with the same error), and the
 * timer never outlives the race. What `work` does after the deadline is its own business: a write
 * already handed to the disk may never return.
 */
export function withDeadline<T>(
  ms: number,
  work: (signal: AbortSignal) => Promise<T>,
  timedOut: () => Error,
): Promise<T> {
  const ac = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = timedOut()
      ac.abort(err)
      reject(err)
    }, ms)
  })
  const done = work(ac.signal)
  done.catch(() => {}) // settles after the deadline, or not at all: nobody waits for it then
  return Promise.race([done, deadline]).finally(() => clearTimeout(timer))
}

/**
 * `p`, or `signal`'s reason once it aborts, whichever comes first: the caller stops waiting, `p`
 * goes on (a file operation handed to the disk cannot be called back). The listener goes with `p`.
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const abandon = () => reject(signal.reason)
    signal.addEventListener('abort', abandon, { once: true })
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', abandon))
  })
}
