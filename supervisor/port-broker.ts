import { MessageChannel } from 'node:worker_threads'
import { codedError } from '../shared/errors.js'
import { createRepeatGate, REPEAT_WINDOW_MS } from '../shared/log-repeats.js'
import type { Logger } from '../shared/logger.js'
import { CALLS, type ServiceApis, type Target } from '../shared/ports/apis.js'
import { serveOn } from '../shared/ports/comlink.js'
import type { ServiceName } from '../shared/services.js'
import type { WorkerHandle } from './worker-handle.js'

/**
 * Hands out the MessagePorts of the service ports (DESIGN.md §9): one MessageChannel per (caller
 * worker, target) pair asked for, re-wired when the target's serving worker changes, and a
 * `port.down` to every caller the moment that worker exits. The supervisor is a target too (its
 * own registry). It carries no call itself: once wired, callers talk to targets directly.
 */
export interface PortBroker {
  /** Installs the `port.request` handler on a new worker's control channel. */
  attach(service: ServiceName, h: WorkerHandle): void
  /** `h` now serves `service` (started, or a successor took over). */
  serving(service: ServiceName, h: WorkerHandle): void
  exited(service: ServiceName, h: WorkerHandle): void
}

function entry<K, V>(
  map: { get(key: K): V | undefined; set(key: K, value: V): unknown },
  key: K,
  make: () => V,
): V {
  const found = map.get(key)
  if (found !== undefined) return found
  const made = make()
  map.set(key, made)
  return made
}

/** Deadline of the broker's own control messages (they are answered by the worker's loop). */
const CONTROL_MS = 5000

export function createPortBroker(supervisorApi: ServiceApis['supervisor'], log: Logger): PortBroker {
  const servers = new Map<Target, WorkerHandle | 'main'>([['supervisor', 'main']])
  /** Each serving worker's id in `port.connect` and `port.down` (0: the main thread). */
  const ids = new WeakMap<WorkerHandle, number>()
  let lastId = 0
  const idOf = (server: WorkerHandle | 'main') => (server === 'main' ? 0 : entry(ids, server, () => ++lastId))
  const callers = new Map<Target, Set<WorkerHandle>>()
  /** The methods of each target a caller may use, by caller (CALLS). */
  const allowed = new WeakMap<WorkerHandle, Partial<Record<Target, readonly string[]>>>()
  /** Requests that wait for their target to come up: answered once it is wired. */
  const waiting = new Map<Target, Map<WorkerHandle, () => void>>()

  /** A caller that sends the supervisor's port anything but its calls: said, not once per message. */
  const repeats = createRepeatGate(log, REPEAT_WINDOW_MS)
  const refusedFrom = (caller: ServiceName) => (type: string) =>
    repeats.log(
      'warn',
      { event: 'ports.call.refused', caller, target: 'supervisor' },
      type,
      { type },
      `${caller} sent the supervisor a port message that is not a call of its methods: not run`,
    )

  const ignore = (what: string) => (err: unknown) =>
    log.debug({ event: 'ports.control.failed', what, err }, 'a port message found its worker gone')

  function wire(caller: WorkerHandle, target: Target): void {
    const server = servers.get(target)
    if (!server) throw codedError('ERR_SERVICE_DOWN', `${target} is down`)
    const methods = allowed.get(caller)?.[target] ?? []
    const { port1, port2 } = new MessageChannel()
    if (server === 'main') serveOn(port2, supervisorApi, methods, refusedFrom(caller.service))
    else
      server.rpc.request('port.serve', { port: port2, methods }, CONTROL_MS, [port2]).catch(ignore('serve'))
    caller.rpc
      .request('port.connect', { target, port: port1, server: idOf(server) }, CONTROL_MS, [port1])
      .catch(ignore('connect'))
  }

  return {
    attach(service, h) {
      allowed.set(h, CALLS[service] ?? {})
      h.rpc.handle('port.request', ({ target, wait }) => {
        // Own keys only: a target named `constructor` would find Object's, a function with a length.
        const calls = allowed.get(h)
        if (!calls || !Object.hasOwn(calls, target) || !calls[target]?.length)
          throw codedError(
            'ERR_CALL_NOT_ALLOWED',
            `${service} may not call ${target} (CALLS, shared/ports/apis.ts)`,
          )
        entry(callers, target, () => new Set()).add(h)
        if (servers.has(target) || !wait) {
          wire(h, target)
          return null
        }
        const parked = entry(waiting, target, () => new Map())
        return new Promise<null>((resolve) => parked.set(h, () => resolve(null)))
      })
    },
    serving(service, h) {
      servers.set(service, h)
      for (const caller of callers.get(service) ?? []) if (caller.alive()) wire(caller, service)
      for (const answer of waiting.get(service)?.values() ?? []) answer()
      waiting.delete(service)
    },
    exited(service, h) {
      for (const set of callers.values()) set.delete(h)
      for (const parked of waiting.values()) parked.delete(h)
      if (servers.get(service) === h) servers.delete(service)
      // No port was ever wired to it: no caller holds one.
      const server = ids.get(h)
      if (server === undefined) return
      // The current worker, or one replaced while calls were still on its ports: those fail now.
      for (const caller of callers.get(service) ?? []) {
        caller.rpc.request('port.down', { target: service, server }, CONTROL_MS).catch(ignore('down'))
      }
    },
  }
}
