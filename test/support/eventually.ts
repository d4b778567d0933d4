import { setTimeout as sleep } from 'node:timers/promises'

/** Polls until `check` returns a value (not undefined), at most `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs}ms`)
    await sleep(25)
  }
}
