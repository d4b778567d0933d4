import { Piscina } from 'piscina'
import type { CsrSpec, SignRequest } from './csr.js'
import type { CsrTask } from './csr-task.js'

/** CSR building and signing off the service's event loop, so it keeps answering the supervisor. */
export interface CsrPool {
  csr(spec: CsrSpec): Promise<string>
  sign(req: SignRequest): Promise<string>
  close(): Promise<void>
}

export function createCsrPool(): CsrPool {
  const pool = new Piscina<CsrTask, string>({
    filename: new URL('./csr-task.js', import.meta.url).href,
    minThreads: 0,
    maxThreads: 2,
    idleTimeout: 30_000,
  })
  return {
    csr: (spec) => pool.run({ op: 'csr', spec }),
    sign: (req) => pool.run({ op: 'sign', req }),
    close: () => pool.destroy(),
  }
}
