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
  Comlink.expose(Object.freeze(facade), nodeEndpoint(port))
}

export type Remote<T> = Comlink.Remote<T>

export function remoteOn<T>(port: MessagePort): Comlink.Remote<T> {
  return Comlink.wrap<T>(nodeEndpoint(port))
}
