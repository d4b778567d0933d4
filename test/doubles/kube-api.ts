import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateRsaKey, loadOrCreateAuthority } from '../../shared/identity/local-authority.js'
import { issueCertificate } from './issue-certificate.js'

export interface KubeObject {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace: string; uid?: string; labels?: Record<string, string> }
  spec?: Record<string, unknown>
}

export interface KubeApiDouble {
  url: string
  /** PEM of the CA that signed the server certificate (the pod's ca.crt). */
  caPem: string
  /** Created objects by "<plural>/<namespace>/<name>". */
  objects: Map<string, KubeObject>
  /** Every request: method, path, status answered. */
  requests: { method: string; path: string; status: number; authorization: string | undefined }[]
  /** The bearer token the API server accepts from now on. */
  setToken(token: string): void
  /** The next `n` creates are answered `status` (e.g. 500, 403). */
  failNext(n: number, status: number): void
  close(): Promise<void>
}

const COLLECTION = /^\/apis\/([^/]+)\/([^/]+)\/namespaces\/([^/]+)\/([^/]+)$/
const DNS1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

/**
 * A Kubernetes API server double over HTTPS: the custom-resource REST paths
 * (POST/GET /apis/{group}/{version}/namespaces/{ns}/{plural}), bearer auth, and metav1.Status
 * errors (401, 404, 409 AlreadyExists, 422 Invalid) as the real one answers them.
 */
export async function startKubeApi(opts: { token: string }): Promise<KubeApiDouble> {
  const ca = await loadOrCreateAuthority(mkdtempSync(join(tmpdir(), 'kube-ca-')))
  const key = await generateRsaKey()
  const cert = issueCertificate(ca, {
    publicKeyPem: key.publicKeyPem,
    commonName: 'kube-apiserver',
    dnsNames: ['localhost', 'kubernetes.default.svc'],
    ips: ['127.0.0.1'],
    validityMs: 3600_000,
  })
  let token = opts.token
  let failures: { n: number; status: number } = { n: 0, status: 0 }
  let uid = 0
  const objects = new Map<string, KubeObject>()
  const requests: KubeApiDouble['requests'] = []

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'https://x').pathname
    const answer = (status: number, body: unknown) => {
      requests.push({ method: req.method ?? '', path, status, authorization: req.headers.authorization })
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    const failure = (code: number, reason: string, message: string) =>
      answer(code, {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message,
        reason,
        code,
      })

    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    if (req.headers.authorization !== `Bearer ${token}`) return failure(401, 'Unauthorized', 'Unauthorized')
    const m = COLLECTION.exec(path)
    if (!m) return failure(404, 'NotFound', 'the server could not find the requested resource')
    const [, group, version, namespace, plural] = m as unknown as string[]
    if (req.method === 'GET') {
      const items = [...objects.entries()]
        .filter(([k]) => k.startsWith(`${plural}/${namespace}/`))
        .map(([, o]) => o)
      return answer(200, { kind: 'List', apiVersion: `${group}/${version}`, items })
    }
    if (req.method !== 'POST') return failure(405, 'MethodNotAllowed', 'method not allowed')
    if (failures.n > 0) {
      failures = { ...failures, n: failures.n - 1 }
      return failure(failures.status, 'InternalError', 'injected failure')
    }
    let obj: KubeObject
    try {
      obj = JSON.parse(Buffer.concat(chunks).toString()) as KubeObject
    } catch {
      return failure(400, 'BadRequest', 'invalid JSON')
    }
    const name = obj.metadata?.name ?? ''
    if (obj.apiVersion !== `${group}/${version}` || !obj.kind || !DNS1123.test(name) || name.length > 253) {
      return failure(422, 'Invalid', `${obj.kind ?? 'object'} "${name}" is invalid`)
    }
    if (obj.metadata.namespace && obj.metadata.namespace !== namespace) {
      return failure(
        400,
        'BadRequest',
        'the namespace of the object does not match the namespace on the request',
      )
    }
    const id = `${plural}/${namespace}/${name}`
    if (objects.has(id)) return failure(409, 'AlreadyExists', `${plural}.${group} "${name}" already exists`)
    const stored: KubeObject = {
      ...obj,
      metadata: { ...obj.metadata, namespace: namespace!, uid: `uid-${++uid}` },
    }
    objects.set(id, stored)
    answer(201, stored)
  }

  const server: Server = createServer({ key: key.privateKeyPem, cert }, (req, res) => {
    handle(req, res).catch(() => res.destroy())
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  return {
    url: `https://127.0.0.1:${port}`,
    caPem: ca.certPem,
    objects,
    requests,
    setToken(t) {
      token = t
    },
    failNext(n, status) {
      failures = { n, status }
    },
    async close() {
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}
