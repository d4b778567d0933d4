import type { Piscina } from 'piscina'
import { CSR_POOL_LIMITS, CSR_POOL_THREADS } from '../config/limits.js'
import { distUrl, requireFromDist } from '../dist-url.js'
import { codedError } from '../errors.js'
import type { CaSpec, CsrSpec, SignRequest } from './csr.js'
import type { CsrTask } from './csr-task.js'

/** CSR building and signing off the service's event loop, so it keeps answering the supervisor. */
export interface CsrPool {
  csr(spec: CsrSpec): Promise<string>
  sign(req: SignRequest): Promise<string>
  /** The local authority's self-signed certificate, made once. */
  ca(spec: CaSpec): Promise<string>
  close(): Promise<void>
}

/**
 * How long a pool thread outlives its last task. Certificates come in bursts (the boot, each
 * refresh); an idle thread holding forge costs ~14 MiB of RSS for nothing in between.
 */
export const CSR_THREAD_IDLE_MS = 2000

/** The task piscina runs. */
const CSR_TASK = distUrl('shared/identity/csr-task.js')

/**
 * piscina from its own CommonJS bundle under dist/ (scripts/bundle.mjs), one file here and one in
 * each pool thread instead of 15 and 7 modules resolved from node_modules.
 */
const loadPiscina = () => requireFromDist<typeof import('piscina')>('shared/identity/piscina/index.cjs')

/**
 * The pool's options but its task. Its threads have heap limits of their own (CSR_POOL_LIMITS):
 * without them each had V8's default of the host's memory, outside every limit the container's
 * is summed from, and a leak there took the pod rather than a task.
 */
export const csrPoolOptions = () =>
  ({
    minThreads: 0,
    maxThreads: CSR_POOL_THREADS,
    idleTimeout: CSR_THREAD_IDLE_MS,
    resourceLimits: CSR_POOL_LIMITS,
  }) as const

/**
 * The pool, and piscina itself, come with the first CSR: most starts reuse the certificates on
 * disk and sign nothing.
 */
export function createCsrPool(): CsrPool {
  let made: Promise<Piscina<CsrTask, string>> | undefined
  let closed = false
  const refused = () => codedError('ERR_CSR_POOL_CLOSED', 'the CSR pool is closed')
  const run = async (task: CsrTask) => {
    // As a destroyed piscina pool does: a task after close() is refused, never a new pool.
    if (closed) throw refused()
    made ??= Promise.resolve().then(() => {
      const { Piscina } = loadPiscina()
      return new Piscina<CsrTask, string>({ filename: CSR_TASK.href, ...csrPoolOptions() })
    })
    const pool = await made
    // Asked before a close() that came while the pool was being made: a pool destroyed with no
    // thread would start one for it after close() said it was done.
    if (closed) throw refused()
    return pool.run(task)
  }
  return {
    csr: (spec) => run({ op: 'csr', spec }),
    sign: (req) => run({ op: 'sign', req }),
    ca: (spec) => run({ op: 'ca', spec }),
    close: async () => {
      closed = true
      if (made) await (await made).destroy()
    },
  }
}
