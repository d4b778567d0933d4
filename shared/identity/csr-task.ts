import { buildCaCert, buildCsr, type CaSpec, type CsrSpec, type SignRequest, signCsr } from './csr.js'

/** The piscina task: forge's CSR building and signing are synchronous and CPU-bound. */
export type CsrTask =
  | { op: 'csr'; spec: CsrSpec }
  | { op: 'sign'; req: SignRequest }
  | { op: 'ca'; spec: CaSpec }

export default function run(task: CsrTask): string {
  if (task.op === 'csr') return buildCsr(task.spec)
  if (task.op === 'ca') return buildCaCert(task.spec)
  return signCsr(task.req)
}
