import { MessageChannel, Worker } from 'node:worker_threads'
import { workerEnv } from '../shared/config/secret-env.js'
import { configFor } from '../shared/config/slice.js'
import type { Config } from '../shared/config/types.js'
import { createDeathNotice, releaseDeath } from '../shared/death-notice.js'
import { codedError } from '../shared/errors.js'
import type { SupervisorOps, WorkerInit, WorkerOps } from '../shared/protocol.js'
import { createRpc, type Rpc } from '../shared/rpc.js'
import type { ServiceName } from '../shared/services.js'
import { releaseLocksOf } from '../shared/status-board.js'
import { releaseStdoutOf, stdoutState } from '../shared/stdout-sink.js'
import type { Prespawned } from './prespawn.js'
import { workerFile } from './worker-file.js'

/**
 * Why a worker thread ended, as `worker.crashed` reports it; `spawn-failed`: it could not be made
 * at all (`new Worker()` threw; no thread ran, its exit code is said to be 1).
 */
export type ExitReason =
  | 'exception'
  | 'oom'
  | 'exit'
  | 'watchdog'
  | 'recycled'
  | 'terminated'
  | 'spawn-failed'

export interface WorkerExit {
  reason: ExitReason
  exitCode: number
  err?: Error
}

export interface WorkerHandle {
  service: ServiceName
  rpc: Rpc<WorkerOps, SupervisorOps>
  /** Settles once the thread has ended; never rejects. */
  exited: Promise<WorkerExit>
  alive(): boolean
  /** Ends the thread now; `reason` is what `exited` will report. */
  terminate(reason: ExitReason): Promise<WorkerExit>
  /** Lets a worker that announced its death (`dying`) end. */
  releaseDeath(): void
}

export interface SpawnOptions {
  config: Config
  board: SharedArrayBuffer
  failpointCounters: SharedArrayBuffer
  /** Threads started before the configuration was known: the service's is used if it fits. */
  prespawned?: Prespawned
  /** It replaces a worker that still serves (WorkerInit.successor). */
  successor?: boolean
  /** The configuration the service ran on, when this thread runs on another (WorkerInit.previous). */
  previous?: Config
}

/** Spawns a service's worker by file path (the supervisor never imports a worker's code). */
export function spawnWorker(service: ServiceName, opts: SpawnOptions): WorkerHandle {
  const { port1, port2 } = new MessageChannel()
  const deathNotice = createDeathNotice()
  const init: WorkerInit = {
    service,
    // Least privilege: no worker holds another service's secrets.
    config: configFor(service, opts.config),
    board: opts.board,
    failpointCounters: opts.failpointCounters,
    deathNotice,
    stdout: stdoutState(),
    control: port2,
    successor: opts.successor ?? false,
    ...(opts.previous && { previous: configFor(service, opts.previous) }),
  }
  const { resourceLimits } = opts.config.services[service]
  const ahead = opts.prespawned?.take(service, resourceLimits)
  if (ahead) {
    ahead.postMessage(init, [port2])
    ahead.ref()
  }
  const worker =
    ahead ??
    new Worker(workerFile(service), {
      name: service,
      workerData: init,
      transferList: [port2],
      resourceLimits,
      env: workerEnv(),
    })
  const rpc = createRpc<WorkerOps, SupervisorOps>(port1)
  // Read now: what a thread held is freed at its end, and its id is not kept past it.
  const tid = worker.threadId
  let error: Error | undefined
  let requested: ExitReason | undefined
  let alive = true

  worker.on('error', (err) => {
    error = err
  })
  const exited = new Promise<WorkerExit>((resolve) => {
    worker.once('exit', (exitCode) => {
      alive = false
      releaseLocksOf(opts.board, tid)
      releaseStdoutOf(tid)
      const reason: ExitReason =
        requested ??
        ((error as { code?: string } | undefined)?.code === 'ERR_WORKER_OUT_OF_MEMORY'
          ? 'oom'
          : error
            ? 'exception'
            : 'exit')
      rpc.close(
        codedError('ERR_WORKER_EXITED', `${service} worker exited (${reason}, code ${exitCode})`, error),
      )
      // Answers the thread posted before it died were just delivered; let whoever awaits them
      // act on them (however many promise hops away) before the exit is known.
      setImmediate(() => resolve({ reason, exitCode, ...(error ? { err: error } : {}) }))
    })
  })

  return {
    service,
    rpc,
    exited,
    alive: () => alive,
    releaseDeath: () => releaseDeath(deathNotice),
    async terminate(reason) {
      if (alive) {
        requested ??= reason
        await worker.terminate()
      }
      return exited
    },
  }
}
