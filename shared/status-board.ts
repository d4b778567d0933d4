import { monotonicMs } from './clock.js'
import { SERVICES, type ServiceName } from './services.js'
import { releaseHeldBy, type ThreadLock, threadLock } from './thread-lock.js'

/**
 * Lock-free shared state: written by the supervisor and the workers, read by the health check and
 * the memory reporter without a message round trip. Int32 cells use Atomics; Float64 cells are
 * single aligned 8-byte stores, never torn on the 64-bit platforms Node supports, and only ever
 * written by one thread each (the worker that owns the row, or the supervisor for its own row).
 */
/** Every worker (and the supervisor) writes its heartbeat this often. */
export const HEARTBEAT_MS = 1000

export const STATES = [
  'idle',
  'starting',
  'running',
  'stopping',
  'stopped',
  'failed',
  'down',
  'restarting',
] as const
export type ServiceState = (typeof STATES)[number]

/**
 * The states in which a service has a thread whose samples (heap, loop) are its own and current.
 * In the others the row holds what its last thread wrote before it ended: not to be reported.
 */
export function hasLiveThread(state: ServiceState): boolean {
  return state === 'idle' || state === 'starting' || state === 'running' || state === 'stopping'
}

/**
 * Why a running service can accept nothing (the gateway's dedup store or sink is down): it stays
 * alive, but is not ready. A bit per reason in the service's cell, written by its worker.
 */
export const DEGRADATIONS = ['redis', 'sink'] as const
export type Degradation = (typeof DEGRADATIONS)[number]

export const PHASES = ['starting', 'running', 'shutting-down'] as const
export type Phase = (typeof PHASES)[number]

export interface WorkerSample {
  state: ServiceState
  heartbeatMs: number
  heapUsedBytes: number
  heapLimitBytes: number
  eventLoopUtilization: number
}

export interface StatusBoard {
  readonly buffer: SharedArrayBuffer
  phase(): Phase
  setPhase(phase: Phase): void
  /** Signals the supervisor has registered so far; failpoints wait for it to move. */
  signalCount(): number
  registerSignal(): void
  /** Resolves true once the signal count moves past `seen`, false after `timeoutMs`. */
  waitForSignal(seen: number, timeoutMs: number): Promise<boolean>
  state(service: ServiceName): ServiceState
  setState(service: ServiceName, state: ServiceState): void
  beat(service: ServiceName | 'supervisor', now?: number): void
  lastBeat(service: ServiceName | 'supervisor'): number
  /** What keeps a running service from accepting work (empty: nothing). */
  degraded(service: ServiceName): Degradation[]
  setDegraded(service: ServiceName, reasons: readonly Degradation[]): void
  setVitals(service: ServiceName, heapUsed: number, heapLimit: number, elu: number): void
  sample(service: ServiceName): WorkerSample
  /** The gateway's sink file, appended to by a gateway and its successor while one drains. */
  sinkLock(): ThreadLock
  /**
   * The identity files (key, certificate, CA, role certificates), written by a certificate worker
   * and its successor while one drains: a key of one beside the certificate of the other otherwise.
   */
  identityLock(): ThreadLock
}

const I_PHASE = 0
const I_SIGNALS = 1
const I_SERVICES = 2
const I_DEGRADED = I_SERVICES + SERVICES.length
const I_SINK_LOCK = I_DEGRADED + SERVICES.length
const F_SUPERVISOR = 0
const F_SERVICES = 1
const F_PER_SERVICE = 4 // heartbeat, heap used, heap limit, event-loop utilisation

const I_IDENTITY_LOCK = I_SINK_LOCK + 1
const LOCKS = [I_SINK_LOCK, I_IDENTITY_LOCK]
const INT_BYTES = (I_IDENTITY_LOCK + 1) * 4
const FLOAT_OFFSET = Math.ceil(INT_BYTES / 8) * 8
const BYTES = FLOAT_OFFSET + (F_SERVICES + SERVICES.length * F_PER_SERVICE) * 8

export function createStatusBoard(buffer = new SharedArrayBuffer(BYTES)): StatusBoard {
  const ints = new Int32Array(buffer, 0, INT_BYTES / 4)
  const floats = new Float64Array(buffer, FLOAT_OFFSET)
  const row = (service: ServiceName) => SERVICES.indexOf(service)
  const beatCell = (s: ServiceName | 'supervisor') =>
    s === 'supervisor' ? F_SUPERVISOR : F_SERVICES + row(s) * F_PER_SERVICE

  return {
    buffer,
    phase: () => PHASES[Atomics.load(ints, I_PHASE)] as Phase,
    setPhase: (phase) => void Atomics.store(ints, I_PHASE, PHASES.indexOf(phase)),
    signalCount: () => Atomics.load(ints, I_SIGNALS),
    registerSignal() {
      Atomics.add(ints, I_SIGNALS, 1)
      Atomics.notify(ints, I_SIGNALS)
    },
    async waitForSignal(seen, timeoutMs) {
      const deadline = monotonicMs() + timeoutMs
      while (Atomics.load(ints, I_SIGNALS) === seen) {
        const left = deadline - monotonicMs()
        if (left <= 0) return false
        const w = Atomics.waitAsync(ints, I_SIGNALS, seen, left)
        if (w.async) await w.value
      }
      return true
    },
    state: (s) => STATES[Atomics.load(ints, I_SERVICES + row(s))] as ServiceState,
    setState: (s, state) => void Atomics.store(ints, I_SERVICES + row(s), STATES.indexOf(state)),
    degraded(s) {
      const bits = Atomics.load(ints, I_DEGRADED + row(s))
      return DEGRADATIONS.filter((_, i) => bits & (1 << i))
    },
    setDegraded(s, reasons) {
      const bits = reasons.reduce((b, r) => b | (1 << DEGRADATIONS.indexOf(r)), 0)
      Atomics.store(ints, I_DEGRADED + row(s), bits)
    },
    beat(s, now = monotonicMs()) {
      floats[beatCell(s)] = now
    },
    lastBeat: (s) => floats[beatCell(s)] as number,
    setVitals(s, heapUsed, heapLimit, elu) {
      const base = beatCell(s)
      floats[base + 1] = heapUsed
      floats[base + 2] = heapLimit
      floats[base + 3] = elu
    },
    sinkLock: () => threadLock(ints, I_SINK_LOCK),
    identityLock: () => threadLock(ints, I_IDENTITY_LOCK),
    sample(s) {
      const base = beatCell(s)
      return {
        state: STATES[Atomics.load(ints, I_SERVICES + row(s))] as ServiceState,
        heartbeatMs: floats[base] as number,
        heapUsedBytes: floats[base + 1] as number,
        heapLimitBytes: floats[base + 2] as number,
        eventLoopUtilization: floats[base + 3] as number,
      }
    },
  }
}

/** Frees every lock of the board a thread that has ended still held (the supervisor, at its exit). */
export function releaseLocksOf(buffer: SharedArrayBuffer, threadId: number): void {
  const ints = new Int32Array(buffer, 0, INT_BYTES / 4)
  for (const lock of LOCKS) releaseHeldBy(ints, lock, threadId)
}
