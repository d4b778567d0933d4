import { setTimeout as sleep } from 'node:timers/promises'
import { codedError } from './errors.js'
import { isServiceName } from './services.js'
import type { StatusBoard } from './status-board.js'

/**
 * Fault injection shipped in the product (DESIGN.md §3): `SIA_FAILPOINTS="name=[N*]action;…"`.
 * Hit counts live in a SharedArrayBuffer, so "the first N hits" holds across worker restarts.
 */
export type FailpointAction =
  | { kind: 'sigint' | 'sigterm' | 'error' | 'hang' }
  | { kind: 'delay'; ms: number }
  | WorkerFault

/** `exit(<code>)` calls process.exit() in the worker; a bare `exit` means code 0. */
export type WorkerFault = { kind: 'crash' | 'reject' | 'block' | 'oom' } | { kind: 'exit'; code: number }

/**
 * Faults of a running worker, one per `worker.crashed` reason: `crash` (uncaught exception),
 * `reject` (unhandled rejection), `exit(<code>)` (process.exit() in the worker), `block` (the event
 * loop never turns again: the watchdog's case), `oom` (allocate until the heap limit). They strike
 * from a timer once the service's start has been acknowledged (before the step goes on when hit
 * later, e.g. in shutdown), so they exercise the restart policy rather than the start-failure path; they make
 * sense only inside a worker.
 */
const WORKER_FAULTS: ReadonlySet<string> = new Set(['crash', 'reject', 'block', 'oom', 'exit'])

export interface FailpointSpec {
  name: string
  action: FailpointAction
  /** Fires only on the first `times` hits; undefined: every hit. */
  times: number | undefined
}

const NAME =
  /^(?:supervisor\.before-start:(?<svc1>[a-z-]+)|supervisor\.during-shutdown|gateway\.before-sink|(?:certificate|token)\.before-write|(?<svc2>[a-z-]+)\.(?:start|shutdown|before-task:[a-z0-9-]+))$/
const ACTION =
  /^(?:(?<times>\d+)\*)?(?<kind>sigint|sigterm|error|crash|reject|block|hang|oom|delay\((?<ms>\d+)\)|exit(?:\((?<code>\d+)\))?)$/

export function parseFailpoints(text: string): FailpointSpec[] {
  const specs: FailpointSpec[] = []
  for (const entry of text.split(';').map((e) => e.trim())) {
    if (entry === '') continue
    const eq = entry.indexOf('=')
    const name = entry.slice(0, eq).trim()
    const actionText = entry.slice(eq + 1).trim()
    const n = NAME.exec(name)
    const service = n?.groups?.svc1 ?? n?.groups?.svc2
    if (eq < 0) throw codedError('ERR_FAILPOINT_SPEC', `"${entry}" is not name=action`)
    if (!n || (service !== undefined && !isServiceName(service))) {
      throw codedError('ERR_FAILPOINT_SPEC', `unknown failpoint "${name || entry}"`)
    }
    const a = ACTION.exec(actionText)
    if (!a?.groups)
      throw codedError('ERR_FAILPOINT_SPEC', `unknown action "${actionText}" for failpoint "${name}"`)
    const kind = a.groups.kind!.replace(/\(.*$/, '')
    if (name.startsWith('supervisor.') && WORKER_FAULTS.has(kind)) {
      throw codedError(
        'ERR_FAILPOINT_SPEC',
        `action "${kind}" applies only inside a worker, not to "${name}"`,
      )
    }
    const action = (
      kind === 'delay'
        ? { kind, ms: Number(a.groups.ms) }
        : kind === 'exit'
          ? { kind, code: Number(a.groups.code ?? 0) }
          : { kind }
    ) as FailpointAction
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
  /** Runs `fault` from a timer once the service's start has been acknowledged (worker faults). */
  afterStart?: (fault: () => void) => void
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
      case 'hang':
        return new Promise<void>(() => {})
      case 'delay':
        await sleep(action.ms)
        return
      case 'crash':
      case 'reject':
      case 'block':
      case 'oom':
      case 'exit':
        env.afterStart?.(workerFault(name, action))
        // Once started, the fault is a microtask, but process.exit() in a worker lets the queued
        // microtasks (the step's continuation) run: one turn of the loop ends it before the step goes on.
        await new Promise<void>((resolve) => setImmediate(resolve))
    }
  }
}

function workerFault(name: string, action: WorkerFault): () => void {
  switch (action.kind) {
    case 'crash':
      return () => {
        throw codedError('ERR_FAILPOINT_CRASH', `failpoint ${name}: injected crash`)
      }
    case 'reject':
      return () =>
        void Promise.reject(codedError('ERR_FAILPOINT_REJECT', `failpoint ${name}: injected rejection`))
    case 'exit':
      return () => process.exit(action.code)
    case 'block':
      return blockEventLoop
    case 'oom':
      return exhaustHeap
  }
}

function blockEventLoop(): never {
  // Never yields to the event loop: no timer, heartbeat or message runs again in this thread, so
  // only the supervisor's watchdog (worker.terminate()) ends it. Waiting in short slices instead
  // of spinning spares the CPU and still lets a termination in between slices.
  const cell = new Int32Array(new SharedArrayBuffer(4))
  for (;;) Atomics.wait(cell, 0, 0, 100)
}

function exhaustHeap(): never {
  // Reachable objects only, so the GC cannot help: V8 stops the worker at its heap limit.
  const hoard: number[][] = []
  for (;;) hoard.push(Array.from({ length: 1 << 16 }, (_, i) => i + hoard.length))
}
