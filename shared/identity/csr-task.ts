import { buildCaCert, buildCsr, type CaSpec, type CsrSpec, type SignRequest, signCsr } from './csr.js'

/** The piscina task: building, encoding and signing a CSR or certificate is synchronous work. */
export type CsrTask =
  | { op: 'csr'; spec: CsrSpec }
  | { op: 'sign'; req: SignRequest }
  | { op: 'ca'; spec: CaSpec }

export default function run(task: CsrTask): string {
  if (task.op === 'csr') return buildCsr(task.spec)
  if (task.op === 'ca') return buildCaCert(task.spec)
  return signCsr(task.req)
}
