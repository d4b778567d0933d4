import { buildCsr, type CsrSpec, type SignRequest, signCsr } from './csr.js'

/** The piscina task: forge's CSR building and signing are synchronous and CPU-bound. */
export type CsrTask = { op: 'csr'; spec: CsrSpec } | { op: 'sign'; req: SignRequest }

export default function run(task: CsrTask): string {
  return task.op === 'csr' ? buildCsr(task.spec) : signCsr(task.req)
}
