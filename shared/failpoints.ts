import { setTimeout as sleep } from 'node:timers/promises'
import { codedError } from './errors.js'
import { isServiceName } from './services.js'
import type { StatusBoard } from './status-board.js'

/**
 * Fault injection shipped in the product (DESIGN.md §3): `SIA_FAILPOINTS="name=[N*]action;…"`.
 * Hit counts live in a SharedArrayBuffer, so "the first N hits" holds across worker restarts.
 */
export type FailpointAction =
  | { kind: 'sigint' | 'sigterm' | 'error' | 'crash' | 'hang' | 'oom' }
  | { kind: 'delay'; ms: number }

export interface FailpointSpec {
  name: string
  action: FailpointAction
  /** Fires only on the first `times` hits; undefined: every hit. */
  times: number | undefined
}

const NAME =
  /^(?:supervisor\.before-start:(?<svc1>[a-z-]+)|supervisor\.during-shutdown|(?<svc2>[a-z-]+)\.(?:start|shutdown|before-task:[a-z0-9-]+))$/
const ACTION = /^(?:(?<times>\d+)\*)?(?<kind>sigint|sigterm|error|crash|hang|oom|delay\((?<ms>\d+)\))$/

export function parseFailpoints(text: string): FailpointSpec[] {
  const specs: FailpointSpec[] = []
  for (const entry of text.split(';').map((e) => e.trim())) {
    if (entry === '') continue
    const eq = entry.indexOf('=')
    const name = entry.slice(0, eq).trim()
    const actionText = entry.slice(eq + 1).trim()
    const n = NAME.exec(name)
    const service = n?.groups?.svc1 ?? n?.groups?.svc2
    if (eq < 0 || !n || (service !== undefined && !isServiceName(service))) {
      throw codedError('ERR_FAILPOINT_SPEC', `unknown failpoint "${name || entry}"`)
    }
    const a = ACTION.exec(actionText)
    if (!a?.groups)
      throw codedError('ERR_FAILPOINT_SPEC', `unknown action "${actionText}" for failpoint "${name}"`)
    const kind = a.groups.kind!.startsWith('delay') ? 'delay' : a.groups.kind!
    if (name.startsWith('supervisor.') && (kind === 'crash' || kind === 'oom')) {
      throw codedError(
        'ERR_FAILPOINT_SPEC',
        `action "${kind}" applies only inside a worker, not to "${name}"`,
      )
    }
    const action = (kind === 'delay' ? { kind, ms: Number(a.groups.ms) } : { kind }) as FailpointAction
    specs.push({ name, action, times: a.groups.times === undefined ? undefined : Number(a.groups.times) })
  }
  return specs
}

export function createFailpointCounters(specs: readonly FailpointSpec[]): SharedArrayBuffer {
  return new SharedArrayBuffer(Math.max(1, specs.length) * 4)
}

export interface FailpointEnv {
  board: StatusBoard
  counters: SharedArrayBuffer
  /** Throws `err` as an uncaught exception once the service's start has been acknowledged. */
  crash?: (err: Error) => void
}

export type HitFailpoint = (name: string) => Promise<void>

export function createFailpoints(specs: readonly FailpointSpec[], env: FailpointEnv): HitFailpoint {
  if (specs.length === 0) return async () => {}
  const counts = new Int32Array(env.counters)
  return async function hit(name) {
    const index = specs.findIndex((s) => s.name === name)
    const spec = specs[index]
    if (!spec) return
    const seen = Atomics.add(counts, index, 1)
    if (spec.times !== undefined && seen >= spec.times) return
    const { action } = spec
    switch (action.kind) {
      case 'sigint':
      case 'sigterm': {
        // Continue only once the supervisor has registered the signal: every case is deterministic.
        const before = env.board.signalCount()
        process.kill(process.pid, action.kind.toUpperCase())
        if (!(await env.board.waitForSignal(before, 10_000))) {
          throw codedError('ERR_FAILPOINT', `failpoint ${name}: signal was not registered in 10s`)
        }
        return
      }
      case 'error':
        throw codedError('ERR_FAILPOINT', `failpoint ${name}: injected error`)
      case 'crash':
        env.crash?.(codedError('ERR_FAILPOINT_CRASH', `failpoint ${name}: injected crash`))
        return
      case 'hang':
        return new Promise<void>(() => {})
      case 'delay':
        await sleep(action.ms)
        return
      case 'oom':
        exhaustHeap()
    }
  }
}

function exhaustHeap(): never {
  // Reachable objects only, so the GC cannot help: V8 stops the worker at its heap limit.
  const hoard: number[][] = []
  for (;;) hoard.push(Array.from({ length: 1 << 16 }, (_, i) => i + hoard.length))
}
