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
  return new Promise((resolve) => onBody(req, limit, budget, resolve))
}

/**
 * `readBody` with a callback, called once: for a hot path that answers at once when the body is
 * in, with no promise between the last chunk and the answer.
 */
export function onBody(
  req: IncomingMessage,
  limit: number,
  budget: BodyBudget | undefined,
  resolve: (result: BodyResult) => void,
): void {
  // Three listeners and no removal: this runs on every request of the hot paths, and `done`
  // makes whatever fires after the answer a no-op. An aborted request emits 'error' (Node emits
  // it only to a listener), so 'aborted', deprecated, is not needed.
  const chunks: Buffer[] = []
  let size = 0
  let done = false
  const lease = budget?.open(() => stop('over-budget'))
  const stop = (reason: 'too-large' | 'aborted' | 'over-budget') => {
    if (done) return
    done = true
    lease?.release()
    chunks.length = 0
    if (reason !== 'aborted') req.pause()
    resolve({ ok: false, reason })
  }
  req.on('data', (chunk: Buffer) => {
    if (done) return
    size += chunk.length
    if (size > limit) return stop('too-large')
    if (lease && !lease.grow(chunk.length)) return stop('over-budget')
    chunks.push(chunk)
  })
  req.on('end', () => {
    if (done) return
    done = true
    lease?.complete()
    // A small body is one chunk: no copy.
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
    resolve({ ok: true, body, release: lease ? () => lease.release() : noop })
  })
  req.on('error', () => stop('aborted'))
}

const noop = () => {}
