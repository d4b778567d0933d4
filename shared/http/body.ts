import { isUtf8 } from 'node:buffer'
import type { IncomingMessage } from 'node:http'
import type { BodyBudget, BodyLease } from './body-budget.js'

export type BodyResult =
  /** `release` gives the body's bytes back to the budget: call it once the body is done with. */
  | { ok: true; text: string; release(): void }
  | { ok: false; reason: 'too-large' | 'aborted' | 'over-budget' | 'not-utf8' }

/**
 * Reads the body, as UTF-8 text, up to `limit` bytes; past the limit it stops reading and says so.
 * Bytes that are not UTF-8 end it with `not-utf8` (decoded, each would become U+FFFD: two alerts
 * that differ only there are one alert with one fingerprint, and what is stored is not what was
 * sent). A body of several chunks is decoded chunk by chunk as they arrive: a 4 MiB body copied
 * into one buffer and decoded at its end held the loop ~25 ms on top of its JSON.parse. With a
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
  // it only to a listener), so 'aborted', deprecated, is not needed. The listeners are anonymous
  // and `stop` is made once: the bundles keep function names, and a named closure made per
  // request costs a defineProperty each time (scripts/bundle.mjs).
  const r: Reading = { req, resolve, size: 0, text: '', done: false }
  const lease = budget?.open(() => stop(r, 'over-budget'))
  r.lease = lease
  req.on('data', (chunk: Buffer) => {
    if (r.done) return
    r.size += chunk.length
    if (r.size > limit) return stop(r, 'too-large')
    if (lease && !lease.grow(chunk.length)) return stop(r, 'over-budget')
    // A small body is one chunk, checked and decoded at the end; from a second chunk on, a
    // strict decoder (which keeps a character split between chunks) takes them as they come.
    try {
      if (r.decoder) r.text += r.decoder.decode(chunk, STREAM)
      else if (r.first === undefined) r.first = chunk
      else {
        r.decoder = new TextDecoder('utf-8', STRICT)
        r.text = r.decoder.decode(r.first, STREAM) + r.decoder.decode(chunk, STREAM)
        r.first = undefined
      }
    } catch {
      stop(r, 'not-utf8')
    }
  })
  req.on('end', () => {
    if (r.done) return
    let body: string
    try {
      if (r.decoder) body = r.text + r.decoder.decode()
      else if (r.first === undefined) body = ''
      else if (isUtf8(r.first)) body = r.first.toString('utf8')
      else throw new TypeError('not UTF-8')
    } catch {
      return stop(r, 'not-utf8')
    }
    r.done = true
    lease?.complete()
    r.first = undefined
    r.text = ''
    resolve({ ok: true, text: body, release: lease ? () => lease.release() : noop })
  })
  req.on('error', () => stop(r, 'aborted'))
}

/** One body being read. */
interface Reading {
  req: IncomingMessage
  resolve: (result: BodyResult) => void
  lease?: BodyLease
  first?: Buffer
  decoder?: InstanceType<typeof TextDecoder>
  text: string
  size: number
  done: boolean
}

const STRICT = { fatal: true, ignoreBOM: true } as const
const STREAM = { stream: true } as const

function stop(r: Reading, reason: 'too-large' | 'aborted' | 'over-budget' | 'not-utf8'): void {
  if (r.done) return
  r.done = true
  r.lease?.release()
  r.first = undefined
  r.text = ''
  if (reason !== 'aborted') r.req.pause()
  r.resolve({ ok: false, reason })
}

const noop = () => {}
