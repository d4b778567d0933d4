import type { MessagePort } from 'node:worker_threads'
import * as Comlink from 'comlink'
import nodeAdapter from 'comlink/dist/umd/node-adapter.js'
import { codedError, deserializeError, type SerializedError, serializeError } from '../errors.js'

// The UMD file's module.exports is the function itself; its typings describe an ES default export.
const nodeEndpoint = nodeAdapter as unknown as typeof nodeAdapter.default

/**
 * comlink over Node MessagePorts, with errors that keep their `code` across threads (comlink's
 * own handler for thrown values keeps only name, message and stack). Installed once per thread,
 * by whoever loads this module first.
 */
const builtin = Comlink.transferHandlers.get('throw')!
Comlink.transferHandlers.set('throw', {
  canHandle: builtin.canHandle,
  serialize: ({ value }: { value: unknown }) => [serializeError(value), []],
  deserialize: (s: SerializedError) => {
    throw deserializeError(s)
  },
} as Comlink.TransferHandler<unknown, unknown>)

/**
 * Answers calls on `port` with the `methods` of `api` (looked up at call time), and nothing else:
 * comlink answers property reads and writes too (GET, SET), and a caller could read any of the
 * object's fields or write through its prototype (`__proto__`) into the serving thread's.
 */
export function serveOn(port: MessagePort, api: object, methods: readonly string[]): void {
  const facade = Object.create(null) as Record<string, (...args: unknown[]) => unknown>
  for (const m of methods) {
    facade[m] = (...args) => {
      const fn = (api as Record<string, unknown>)[m]
      if (typeof fn !== 'function') throw codedError('ERR_NO_METHOD', `no method ${m} here`)
      return fn.apply(api, args)
    }
  }
  Comlink.expose(Object.freeze(facade), guarded(nodeEndpoint(port)))
}

/**
 * comlink's listener reads a message's argument list before its own try (an `argumentList` that
 * is not a list throws there): such a message is dropped, not an uncaught exception on the
 * serving thread (the supervisor's own, for its registry).
 */
type Listener = Parameters<Comlink.Endpoint['addEventListener']>[1]

function guarded(ep: Comlink.Endpoint): Comlink.Endpoint {
  const wrapped = new Map<Listener, (ev: Event) => void>()
  return {
    postMessage: ep.postMessage.bind(ep),
    start: ep.start?.bind(ep),
    addEventListener(type, listener) {
      const safe = (ev: Event) => {
        try {
          if (typeof listener === 'function') listener(ev)
          else listener.handleEvent(ev)
        } catch {}
      }
      wrapped.set(listener, safe)
      ep.addEventListener(type, safe)
    },
    removeEventListener(type, listener) {
      const safe = wrapped.get(listener)
      if (!safe) return
      wrapped.delete(listener)
      ep.removeEventListener(type, safe)
    },
  }
}

export type Remote<T> = Comlink.Remote<T>

export function remoteOn<T>(port: MessagePort): Comlink.Remote<T> {
  return Comlink.wrap<T>(nodeEndpoint(port))
}
