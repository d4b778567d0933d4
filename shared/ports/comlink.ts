import type { MessagePort } from 'node:worker_threads'
import * as Comlink from 'comlink'
import nodeAdapter from 'comlink/dist/umd/node-adapter.js'
import { codedError, deserializeError, type SerializedError, serializeError } from '../errors.js'

// The UMD file's module.exports is the function itself; its typings describe an ES default export.
const nodeEndpoint = nodeAdapter as unknown as typeof nodeAdapter.default

/**
 * comlink over Node MessagePorts, with errors that keep their `code` across threads (comlink's
 * own handler for thrown values keeps only name, message and stack): a caller's comlink turns
 * what `serveOn` sends for a thrown error back into one with this handler. Installed once per
 * thread, by whoever loads this module first.
 */
const builtin = Comlink.transferHandlers.get('throw')!
Comlink.transferHandlers.set('throw', {
  canHandle: builtin.canHandle,
  serialize: ({ value }: { value: unknown }) => [serializeError(value), []],
  deserialize: (s: SerializedError) => {
    throw deserializeError(s)
  },
} as Comlink.TransferHandler<unknown, unknown>)

/** comlink's message types (its protocol), as a refused message is reported; anything else is `other`. */
const TYPES: ReadonlySet<string> = new Set(['GET', 'SET', 'APPLY', 'CONSTRUCT', 'ENDPOINT', 'RELEASE'])

/** A comlink reply: a value, or a thrown error (the handler above turns it back into one). */
const returned = (value: unknown) => ({ type: 'RAW', value })
const thrown = (err: unknown) => ({ type: 'HANDLER', name: 'throw', value: serializeError(err) })

/**
 * Answers comlink calls on `port` with the `methods` of `api` (looked up at call time), and
 * nothing else. comlink's own `expose` answers every message along any path: reads and writes of
 * fields (a SET through `collect.__proto__.__proto__` wrote into the serving thread's
 * Object.prototype), constructions, and ENDPOINT, which exposed the API again on a new port without
 * any guard (where a malformed call threw on the serving thread: the supervisor's, for its
 * registry, and the whole sidecar ended). Here a message is a call only as comlink's caller sends
 * one: APPLY, a path of one served method, a list of plain (RAW) arguments. Any other is not run:
 * it is answered with ERR_PORT_REFUSED (a caller's mistake fails at once, not at its deadline) and
 * reported to `refused` with its type. The caller's side stays comlink's (`remoteOn`).
 */
export function serveOn(
  port: MessagePort,
  api: object,
  methods: readonly string[],
  refused: (type: string) => void,
): void {
  const served = new Set(methods)
  port.on('message', (msg: unknown) => {
    if (typeof msg !== 'object' || msg === null) return void refused('other')
    const { id, type, path, argumentList } = msg as Record<string, unknown>
    const answer = (reply: object) => {
      try {
        port.postMessage({ ...reply, id })
      } catch (err) {
        // A value that cannot be cloned: the caller gets the DataCloneError, not a silence.
        port.postMessage({ ...thrown(err), id })
      }
    }
    const method = Array.isArray(path) && path.length === 1 ? path[0] : undefined
    const args = Array.isArray(argumentList) && argumentList.every(isRaw) ? argumentList : undefined
    if (type !== 'APPLY' || typeof method !== 'string' || !args) {
      refused(typeof type === 'string' && TYPES.has(type) ? type : 'other')
      return answer(
        thrown(codedError('ERR_PORT_REFUSED', 'only calls of the methods served here are answered')),
      )
    }
    if (!served.has(method)) {
      refused('APPLY')
      return answer(thrown(codedError('ERR_NO_METHOD', `no method ${method} here`)))
    }
    Promise.resolve()
      .then(() => {
        const fn = (api as Record<string, unknown>)[method]
        if (typeof fn !== 'function') throw codedError('ERR_NO_METHOD', `no method ${method} here`)
        return fn.apply(
          api,
          args.map((a) => a.value),
        )
      })
      .then(returned, thrown)
      .then(answer)
  })
}

/**
 * An argument as comlink's caller sends a plain value. A HANDLER one would have this thread
 * deserialise what the caller chose: a port wrapped as a proxy into it, or a thrown error.
 */
function isRaw(a: unknown): a is { type: 'RAW'; value: unknown } {
  return typeof a === 'object' && a !== null && (a as { type?: unknown }).type === 'RAW'
}

export type Remote<T> = Comlink.Remote<T>

export function remoteOn<T>(port: MessagePort): Comlink.Remote<T> {
  return Comlink.wrap<T>(nodeEndpoint(port))
}
