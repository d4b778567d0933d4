import { type MessagePort, receiveMessageOnPort, type Transferable } from 'node:worker_threads'
import {
  type CodedError,
  codedError,
  deserializeError,
  type SerializedError,
  serializeError,
} from './errors.js'

/**
 * Typed request/response over one MessagePort, used for the control channel between the
 * supervisor and each worker. Every request has an id and a deadline; `close()` rejects whatever is
 * still pending, so nothing ever waits on a worker that has gone.
 */
export type OpMap = Record<string, { args: unknown; result: unknown }>

type Message =
  | { k: 'req'; id: number; op: string; args: unknown }
  | { k: 'res'; id: number; ok: true; value: unknown }
  | { k: 'res'; id: number; ok: false; error: SerializedError }

export interface Rpc<Out extends OpMap, In extends OpMap> {
  /** `transfer`: ports (or buffers) in `args` that move to the other side. */
  request<K extends keyof Out & string>(
    op: K,
    args: Out[K]['args'],
    timeoutMs: number,
    transfer?: readonly Transferable[],
  ): Promise<Out[K]['result']>
  handle<K extends keyof In & string>(
    op: K,
    fn: (args: In[K]['args']) => Promise<In[K]['result']> | In[K]['result'],
  ): void
  /** Rejects every pending request with `reason` and refuses new ones. */
  close(reason: CodedError): void
}

interface Pending {
  resolve(v: unknown): void
  reject(e: Error): void
  timer: NodeJS.Timeout
}

function wellFormed(msg: unknown): msg is Message {
  if (typeof msg !== 'object' || msg === null) return false
  const m = msg as Record<string, unknown>
  if (typeof m.id !== 'number') return false
  return m.k === 'req' ? typeof m.op === 'string' : m.k === 'res'
}

/**
 * Settles `p` with its reply. An error of another shape (`error: null`, a bug in the other thread)
 * is not deserialised: that threw inside the port's listener, an uncaught exception on this thread
 * (on the supervisor's, the end of every service), and the request, already taken off, never settled.
 */
function settle(p: Pending, msg: Extract<Message, { k: 'res' }>): void {
  if (msg.ok === true) return void p.resolve(msg.value)
  const error: unknown = msg.ok === false ? msg.error : undefined
  const isError =
    typeof error === 'object' &&
    error !== null &&
    typeof (error as { message?: unknown }).message === 'string'
  p.reject(
    isError
      ? deserializeError(error as SerializedError)
      : codedError('ERR_RPC_BAD_REPLY', 'the other side answered with neither a value nor an error'),
  )
}

export function createRpc<Out extends OpMap, In extends OpMap>(port: MessagePort): Rpc<Out, In> {
  const pending = new Map<number, Pending>()
  const handlers = new Map<string, (args: unknown) => unknown>()
  let nextId = 1
  let closed: CodedError | undefined

  const onMessage = (msg: Message) => {
    // A message of another shape (a bug in the other thread) is dropped: thrown here, it would be
    // an uncaught exception on this thread, and on the supervisor's that ends every service.
    if (!wellFormed(msg)) return
    if (msg.k === 'res') {
      const p = pending.get(msg.id)
      if (!p) return // answered after its deadline: the caller has moved on
      pending.delete(msg.id)
      clearTimeout(p.timer)
      settle(p, msg)
      return
    }
    const fn = handlers.get(msg.op)
    const reply = (m: Message) => {
      if (!closed) port.postMessage(m)
    }
    Promise.resolve()
      .then(() => {
        if (!fn) throw codedError('ERR_RPC_UNKNOWN_OP', `no handler for "${msg.op}"`)
        return fn(msg.args)
      })
      .then(
        (value) => reply({ k: 'res', id: msg.id, ok: true, value }),
        (err) => reply({ k: 'res', id: msg.id, ok: false, error: serializeError(err) }),
      )
  }
  port.on('message', onMessage)

  return {
    request(op, args, timeoutMs, transfer = []) {
      if (closed) return Promise.reject(closed)
      const id = nextId++
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id)
          reject(codedError('ERR_RPC_TIMEOUT', `"${op}" got no answer within ${timeoutMs}ms`))
        }, timeoutMs)
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer })
        port.postMessage({ k: 'req', id, op, args } satisfies Message, transfer)
      })
    },
    handle(op, fn) {
      handlers.set(op, fn as (args: unknown) => unknown)
    },
    close(reason) {
      if (closed) return
      // A worker that posted its answer and then died: the answer may still sit in the port's
      // queue, behind the thread's exit event. Take it before rejecting what is left.
      for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
        const msg = m.message as Message
        if (wellFormed(msg) && msg.k === 'res') onMessage(msg)
      }
      closed = reason
      for (const p of pending.values()) {
        clearTimeout(p.timer)
        p.reject(reason)
      }
      pending.clear()
      port.close()
    },
  }
}
