import { availableParallelism } from 'node:os'
import { Worker, type WorkerOptions } from 'node:worker_threads'
import { DEFAULT_RESOURCE_LIMITS } from '../shared/config/limits.js'
import { workerEnv } from '../shared/config/secret-env.js'
import type { ResourceLimits } from '../shared/config/types.js'
import { AWAIT_INIT } from '../shared/protocol.js'
import { SERVICES, type ServiceName } from '../shared/services.js'
import { workerFile } from './worker-file.js'

/** The workers started before the configuration is known, for the supervisor to take or end. */
export interface Prespawned {
  /**
   * The thread started for `service`, if there is one, started with these `limits` and alive.
   * Each is taken once; it then waits for its init message (supervisor/worker-handle.ts).
   */
  take(service: ServiceName, limits: ResourceLimits): Worker | undefined
  /** Ends every thread not taken: a disabled service, a run that never starts. */
  discard(): void
}

/**
 * The first services in start order get their thread as the CLI begins, with the default resource
 * limits, while this thread loads the supervisor and the configuration (~150 ms in which a core
 * would idle): one a spare core, so the certificate service, first in the order, has booted by the
 * time it is started. More at once starve this thread, whose loading is then the critical path
 * (all six: `supervisor.boot` 300 ms later, no faster to ready). A thread loads its bundle and
 * waits for its init (define-service.ts): no service runs, logs or binds anything before the
 * configuration is valid. Threads not taken never hold the process: unreferenced until taken.
 */
export function prespawnWorkers(
  count = Math.max(1, availableParallelism() - 1),
  spawn = (file: URL, options: WorkerOptions) => new Worker(file, options),
): Prespawned {
  const ahead = new Map<ServiceName, Worker>()
  for (const service of SERVICES.slice(0, count)) {
    let worker: Worker
    try {
      worker = spawn(workerFile(service), {
        name: service,
        workerData: AWAIT_INIT,
        resourceLimits: DEFAULT_RESOURCE_LIMITS[service],
        env: workerEnv(),
      })
    } catch {
      // No thread to be had (EAGAIN: the pids limit): only a head start is lost. The run asks
      // for this service's thread again, where a thread that cannot be made fails its start
      // (a logged, budgeted exit 1); here it would end the CLI before it could say anything.
      break
    }
    worker.unref()
    // A thread that failed before it was taken is not taken (its error has no other listener).
    const drop = () => ahead.get(service) === worker && ahead.delete(service)
    worker.once('error', drop)
    worker.once('exit', drop)
    ahead.set(service, worker)
  }
  return {
    take(service, limits) {
      const worker = ahead.get(service)
      if (!worker) return undefined
      ahead.delete(service)
      if (sameLimits(limits, DEFAULT_RESOURCE_LIMITS[service])) return worker
      void worker.terminate() // the configuration gives this service other limits
      return undefined
    },
    discard() {
      for (const worker of ahead.values()) void worker.terminate()
      ahead.clear()
    },
  }
}

function sameLimits(a: ResourceLimits, b: ResourceLimits): boolean {
  return (
    a.maxOldGenerationSizeMb === b.maxOldGenerationSizeMb &&
    a.maxYoungGenerationSizeMb === b.maxYoungGenerationSizeMb &&
    a.stackSizeMb === b.stackSizeMb
  )
}
