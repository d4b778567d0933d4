import type { MessagePort } from 'node:worker_threads'
import { monotonicMs } from '../clock.js'
import { codedError } from '../errors.js'
import type { SupervisorOps, WorkerOps } from '../protocol.js'
import type { Rpc } from '../rpc.js'
import type { ServiceApis, ServiceProxy, Target } from './apis.js'
import { type Remote, remoteOn, serveOn } from './comlink.js'

/**
 * Typed calls between services over comlink (DESIGN.md §9), wrapped so that none waits forever:
 * every call has a deadline, is rejected with ERR_SERVICE_DOWN the moment the supervisor reports
 * the target's worker gone, and once the supervisor has wired a replacement, reaches the new
 * worker through the same proxy. The supervisor hands out the MessagePorts over the control
 * channel: `port.request` asks for a link; `port.connect`, `port.serve` and `port.down` arrive.
 */
export interface ServicePorts {
  /** Adds `api`'s methods to what this worker answers. */
  expose(api: object): void
  /**
   * `timeoutMs`: each call's deadline (SERVICE_CALL_TIMEOUT by default). `waitForUp`: a call made
   * while the target is down (starting, restarting) waits for it within that deadline, instead of
   * failing at once with ERR_SERVICE_DOWN.
   */
  connect<T extends Target>(
    target: T,
    opts?: { timeoutMs?: number; waitForUp?: boolean },
  ): ServiceProxy<ServiceApis[T]>
}

/** One port to one of the target's workers, and the calls waiting on it. */
interface Wire {
  port: MessagePort
  remote: Remote<Record<string, (...args: unknown[]) => unknown>>
  calls: Set<(err: Error) => void>
  /** The worker at the other end (the supervisor's id for it). */
  server: number
  /** Replaced by a wire to a new worker: closed once its last call has settled. */
  retired?: boolean
}

/** `refused`: told the type of each port message that was not a call of a method served (serveOn). */
export function createServicePorts(
  rpc: Rpc<SupervisorOps, WorkerOps>,
  defaultTimeoutMs: number,
  refused: (type: string) => void,
): ServicePorts {
  const api: Record<string, unknown> = {}
  const wires = new Map<Target, Wire>()
  /** Replaced wires that still carry calls, with their target. */
  const retired = new Map<Wire, Target>()
  const asking = new Map<Target, Promise<unknown>>()

  const down = (target: Target) => codedError('ERR_SERVICE_DOWN', `${target} is down`)
  const cut = (target: Target, wire: Wire) => {
    for (const fail of wire.calls) fail(down(target))
    retired.delete(wire)
    wire.port.close()
  }

  rpc.handle('port.serve', ({ port, methods }) => {
    serveOn(port, api, methods, refused)
    return null
  })
  rpc.handle('port.connect', ({ target, port, server }) => {
    // A replacement: calls already on the old wire finish there (or meet their deadline, or the
    // old worker's end, whichever comes first).
    const old = wires.get(target)
    if (old) {
      old.retired = true
      if (old.calls.size === 0) old.port.close()
      else retired.set(old, target)
    }
    wires.set(target, { port, remote: remoteOn(port), calls: new Set(), server })
    return null
  })
  rpc.handle('port.down', ({ target, server }) => {
    const current = wires.get(target)
    if (current?.server === server) {
      wires.delete(target)
      cut(target, current)
    }
    for (const [wire, t] of retired) if (t === target && wire.server === server) cut(target, wire)
    return null
  })

  async function call(
    target: Target,
    method: string,
    args: unknown[],
    timeoutMs: number,
    wait: boolean,
  ): Promise<unknown> {
    const deadline = monotonicMs() + timeoutMs
    if (!wires.has(target)) {
      // The supervisor wires the link (port.connect) before it answers.
      let ask = asking.get(target)
      if (!ask) {
        ask = rpc.request('port.request', { target, wait }, timeoutMs).finally(() => asking.delete(target))
        asking.set(target, ask)
      }
      await ask.catch((err: Error & { code?: string }) => {
        throw err.code === 'ERR_RPC_TIMEOUT'
          ? codedError('ERR_SERVICE_DOWN', `${target} did not come up within ${timeoutMs}ms`)
          : err
      })
    }
    for (;;) {
      const wire = wires.get(target)
      if (!wire) throw down(target)
      try {
        return await callOn(wire, target, method, args, timeoutMs, deadline)
      } catch (err) {
        // Sent to a worker being replaced, which ended before it answered: its successor, wired
        // meanwhile, answers within the same deadline. Every method is a read (a collect, the
        // identity): asked twice, nothing is done twice. A scrape in a reload reported the
        // service down and left its series out.
        const next = wires.get(target)
        const replaced = wire.retired && next !== undefined && next !== wire
        if (!replaced || (err as { code?: string }).code !== 'ERR_SERVICE_DOWN') throw err
      }
    }
  }

  function callOn(
    wire: Wire,
    target: Target,
    method: string,
    args: unknown[],
    timeoutMs: number,
    deadline: number,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const settle = (fn: () => void) => {
        clearTimeout(timer)
        wire.calls.delete(fail)
        if (wire.retired && wire.calls.size === 0) {
          retired.delete(wire)
          wire.port.close()
        }
        fn()
      }
      const fail = (err: Error) => settle(() => reject(err))
      const timer = setTimeout(
        () =>
          fail(
            codedError('ERR_SERVICE_TIMEOUT', `${target}.${method}() got no answer within ${timeoutMs}ms`),
          ),
        Math.max(0, deadline - monotonicMs()),
      )
      wire.calls.add(fail)
      const fn = wire.remote[method] as (...a: unknown[]) => Promise<unknown>
      fn(...args).then(
        (value) => settle(() => resolve(value)),
        (err: Error) => fail(err),
      )
    })
  }

  return {
    expose: (methods) => void Object.assign(api, methods),
    connect(target, opts = {}) {
      const timeoutMs = opts.timeoutMs ?? defaultTimeoutMs
      const wait = opts.waitForUp ?? false
      return new Proxy({} as ServiceProxy<ServiceApis[typeof target]>, {
        get: (_, method) =>
          typeof method === 'string'
            ? (...args: unknown[]) => call(target, method, args, timeoutMs, wait)
            : undefined,
      })
    },
  }
}
