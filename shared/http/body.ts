import type { IncomingMessage } from 'node:http'
import { StringDecoder } from 'node:string_decoder'
import type { BodyBudget } from './body-budget.js'

export type BodyResult =
  /** `release` gives the body's bytes back to the budget: call it once the body is done with. */
  { ok: true; text: string; release(): void } | { ok: false; reason: 'too-large' | 'aborted' | 'over-budget' }

/**
 * Reads the body, as UTF-8 text, up to `limit` bytes; past the limit it stops reading and says so.
 * A body of several chunks is decoded chunk by chunk as they arrive: a 4 MiB body copied into one
 * buffer and decoded at its end held the loop ~25 ms on top of its JSON.parse. With a
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
  // A small body is one chunk, decoded at the end; from a second chunk on, a decoder (which
  // keeps a character split between chunks) takes them as they come.
  let first: Buffer | undefined
  let decoder: StringDecoder | undefined
  let text = ''
  let size = 0
  let done = false
  const lease = budget?.open(() => stop('over-budget'))
  const stop = (reason: 'too-large' | 'aborted' | 'over-budget') => {
    if (done) return
    done = true
    lease?.release()
    first = undefined
    text = ''
    if (reason !== 'aborted') req.pause()
    resolve({ ok: false, reason })
  }
  req.on('data', (chunk: Buffer) => {
    if (done) return
    size += chunk.length
    if (size > limit) return stop('too-large')
    if (lease && !lease.grow(chunk.length)) return stop('over-budget')
    if (decoder) text += decoder.write(chunk)
    else if (first === undefined) first = chunk
    else {
      decoder = new StringDecoder('utf8')
      text = decoder.write(first) + decoder.write(chunk)
      first = undefined
    }
  })
  req.on('end', () => {
    if (done) return
    done = true
    lease?.complete()
    const body = decoder ? text + decoder.end() : (first?.toString('utf8') ?? '')
    first = undefined
    text = ''
    resolve({ ok: true, text: body, release: lease ? () => lease.release() : noop })
  })
  req.on('error', () => stop('aborted'))
}

const noop = () => {}
