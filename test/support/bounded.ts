/** `call`, bounded, so that a client without a deadline fails a test rather than hanging it. */
export function bounded<T>(call: Promise<T>, ms = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms / 1000} s`)), ms)
  })
  return Promise.race([call, bound]).finally(() => clearTimeout(timer))
}
