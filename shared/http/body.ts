import type { IncomingMessage } from 'node:http'
import type { BodyBudget } from './body-budget.js'

export type BodyResult =
  /** `release` gives the body's bytes back to the budget: call it once the body is done with. */
  { ok: true; body: Buffer; release(): void } | { ok: false; reason: 'too-large' | 'aborted' | 'over-budget' }

/**
 * Reads the body up to `limit` bytes; past the limit it stops reading and says so. With a
 * `budget`, every byte held counts against it until `release()`, and the read ends with
 * `over-budget` when there is no room, or when a smaller body needed this one's room.
 */
export function readBody(req: IncomingMessage, limit: number, budget?: BodyBudget): Promise<BodyResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    let done = false
    const lease = budget?.open(() => stop('over-budget'))
    const finish = (result: BodyResult) => {
      if (done) return
      done = true
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onAbort)
      req.off('aborted', onAbort)
      resolve(result)
    }
    const stop = (reason: 'too-large' | 'aborted' | 'over-budget') => {
      lease?.release()
      chunks.length = 0
      if (reason !== 'aborted') req.pause()
      finish({ ok: false, reason })
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) return stop('too-large')
      if (lease && !lease.grow(chunk.length)) return stop('over-budget')
      chunks.push(chunk)
    }
    const onEnd = () => {
      lease?.complete()
      finish({ ok: true, body: Buffer.concat(chunks, size), release: () => lease?.release() })
    }
    const onAbort = () => stop('aborted')
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onAbort)
    req.on('aborted', onAbort)
  })
}
