import { Piscina } from 'piscina'
import type { CsrSpec, SignRequest } from './csr.js'
import type { CsrTask } from './csr-task.js'

/** CSR building and signing off the service's event loop, so it keeps answering the supervisor. */
export interface CsrPool {
  csr(spec: CsrSpec): Promise<string>
  sign(req: SignRequest): Promise<string>
  close(): Promise<void>
}

/**
 * How long a pool thread outlives its last task. Certificates come in bursts (the boot, each
 * refresh); an idle thread holding forge costs ~14 MiB of RSS for nothing in between.
 */
export const CSR_THREAD_IDLE_MS = 2000

export function createCsrPool(): CsrPool {
  const pool = new Piscina<CsrTask, string>({
    filename: new URL('./csr-task.js', import.meta.url).href,
    minThreads: 0,
    maxThreads: 2,
    idleTimeout: CSR_THREAD_IDLE_MS,
  })
  return {
    csr: (spec) => pool.run({ op: 'csr', spec }),
    sign: (req) => pool.run({ op: 'sign', req }),
    close: () => pool.destroy(),
  }
}
