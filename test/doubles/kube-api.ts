import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { generateRsaKey, loadOrCreateAuthority } from '../../shared/identity/local-authority.js'
import { issueCertificate } from './issue-certificate.js'

export interface KubeObject {
  apiVersion: string
  kind: string
  metadata: {
    name: string
    namespace: string
    uid?: string
    labels?: Record<string, string>
    /** Set: its deletion is under way (a finalizer pending); a create of its name is refused. */
    deletionTimestamp?: string
  }
  spec?: Record<string, unknown>
}

export interface KubeApiDouble {
  url: string
  /** PEM of the CA that signed the server certificate (the pod's ca.crt). */
  caPem: string
  /** Created objects by "<plural>/<namespace>/<name>". */
  objects: Map<string, KubeObject>
  /** Every request: method, path, status answered. */
  requests: {
    method: string
    path: string
    status: number
    authorization: string | undefined
    dryRun: boolean
  }[]
  /** The most connections open at once since the double started. */
  peakConnections(): number
  /** Requests received so far, answered or not (`requests` holds those answered). */
  received(): number
  /**
   * Every request answers 200 at once, then `bytes` of body every `ms`, never ending: an API server
   * (or a proxy) that trickles, which no idle timeout catches, or one that floods (0: off).
   */
  drip(ms: number, bytes?: number): void
  /**
   * Every request is answered `ms` later, as by an API server under load (0: at once); or only
   * those that store (not a dry run), as by one whose etcd is slow.
   */
  latency(ms: number, of?: 'all' | 'stores'): void
  /** The next request is answered 200 with half of the body its length announces, then the connection is cut. */
  cutNext(): void
  /**
   * The next `n` requests (whose path matches `only`, if given) are answered 200 with an HTML
   * page, as by a proxy's sign-in page in front of the API server.
   */
  impostorNext(n: number, only?: RegExp): void
  /**
   * The next request's connection is closed with no answer, as when a load balancer closes a
   * kept-alive connection at the moment the client sends on it.
   */
  hangUpNext(): void
  /** The bearer token the API server accepts from now on. */
  setToken(token: string): void
  /** The next `n` creates and applies are answered `status` (e.g. 500, 403), with a Retry-After if given. */
  failNext(n: number, status: number, retryAfterSec?: number): void
  /**
   * Custom resources for which `refuse` is true are invalid (422), as against a schema, or (`by`
   * 'admission') denied by a validating admission webhook (403).
   */
  refuseObjects(refuse: (obj: KubeObject) => boolean, by?: 'schema' | 'admission'): void
  /** Core v1 secrets by "<namespace>/<name>", as stored after server-side apply. */
  secrets: Map<string, CoreObject>
  /** Every PATCH to a secret: its query, content type and parsed body, answered or refused. */
  applies: {
    path: string
    query: Record<string, string>
    contentType: string
    body: unknown
    status: number
  }[]
  /** A ServiceAccount the API server knows; returns its uid. */
  addServiceAccount(namespace: string, name: string): string
  /** RBAC: refuse `verb` on `resource` (e.g. 'patch', 'secrets') with 403 Forbidden, or allow it again. */
  deny(verb: string, resource: string): void
  allow(verb: string, resource: string): void
  close(): Promise<void>
}

export interface CoreObject {
  apiVersion: string
  kind: string
  metadata: {
    name: string
    namespace: string
    uid: string
    ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string }[]
    managedFields?: { manager: string; operation: string }[]
  }
  type?: string
  data?: Record<string, string>
}

const CORE = /^\/api\/v1\/namespaces\/([^/]+)\/(secrets|serviceaccounts)\/([^/]+)$/

const COLLECTION = /^\/apis\/([^/]+)\/([^/]+)\/namespaces\/([^/]+)\/([^/]+)$/
const DNS1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

/**
 * A Kubernetes API server double over HTTPS: the custom-resource REST paths
 * (POST/GET /apis/{group}/{version}/namespaces/{ns}/{plural}), bearer auth, and metav1.Status
 * errors (401, 404, 409 AlreadyExists, also for an object being deleted, 422 Invalid) as the real
 * one answers them.
 */
export async function startKubeApi(opts: {
  token: string
  user?: string
  /** Served under this path only (an API server behind a proxy at a path), as `url` says. */
  pathPrefix?: string
}): Promise<KubeApiDouble> {
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
  let failures: { n: number; status: number; retryAfterSec?: number } = { n: 0, status: 0 }
  let impostor = 0
  let impostorOnly: RegExp | undefined
  let hangUp = false
  let refuse: (obj: KubeObject) => boolean = () => false
  let refuseBy: 'schema' | 'admission' = 'schema'
  let uid = 0
  const objects = new Map<string, KubeObject>()
  const requests: KubeApiDouble['requests'] = []
  const secrets = new Map<string, CoreObject>()
  const serviceAccounts = new Map<string, CoreObject>()
  const applies: KubeApiDouble['applies'] = []
  const denied = new Set<string>()
  const user = opts.user ?? 'system:serviceaccount:default:default'

  let received = 0
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    received++
    const reqUrl = new URL(req.url ?? '/', 'https://x')
    const prefix = opts.pathPrefix ?? ''
    const path = reqUrl.pathname.startsWith(`${prefix}/`)
      ? reqUrl.pathname.slice(prefix.length)
      : `/not-under-the-prefix${reqUrl.pathname}`
    // A server-side dry run (?dryRun=All): every check, nothing stored.
    const dryRun = reqUrl.searchParams.get('dryRun') === 'All'
    const answer = (status: number, body: unknown) => {
      requests.push({
        method: req.method ?? '',
        path,
        status,
        authorization: req.headers.authorization,
        dryRun,
      })
      const retryAfter = status === failures.status && failures.retryAfterSec
      res.writeHead(status, {
        'content-type': 'application/json',
        ...(retryAfter !== undefined && retryAfter !== false ? { 'retry-after': String(retryAfter) } : {}),
      })
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
    if (hangUp) {
      hangUp = false
      requests.push({
        method: req.method ?? '',
        path,
        status: 0,
        authorization: req.headers.authorization,
        dryRun,
      })
      return void req.socket.destroy()
    }
    if (impostor > 0 && (!impostorOnly || impostorOnly.test(path))) {
      impostor--
      requests.push({
        method: req.method ?? '',
        path,
        status: 200,
        authorization: req.headers.authorization,
        dryRun,
      })
      res.writeHead(200, { 'content-type': 'text/html' })
      return res.end('<html><body>Sign in</body></html>')
    }
    if (req.headers.authorization !== `Bearer ${token}`) return failure(401, 'Unauthorized', 'Unauthorized')
    const core = CORE.exec(path)
    if (core) {
      const [, namespace, resource, name] = core as unknown as [string, string, string, string]
      const forbidden = (verb: string) =>
        failure(
          403,
          'Forbidden',
          `${resource} "${name}" is forbidden: User "${user}" cannot ${verb} resource "${resource}" in API group "" in the namespace "${namespace}"`,
        )
      const id = `${namespace}/${name}`
      const store = resource === 'secrets' ? secrets : serviceAccounts
      if (req.method === 'GET') {
        if (denied.has(`get ${resource}`)) return forbidden('get')
        const obj = store.get(id)
        if (!obj) return failure(404, 'NotFound', `${resource} "${name}" not found`)
        return answer(200, obj)
      }
      if (req.method !== 'PATCH' || resource !== 'secrets') {
        return failure(405, 'MethodNotAllowed', 'method not allowed')
      }
      const query = Object.fromEntries(new URL(req.url ?? '/', 'https://x').searchParams)
      const contentType = String(req.headers['content-type'] ?? '')
      const record = { path, query, contentType, body: undefined as unknown, status: 0 }
      applies.push(record)
      const refuse = (code: number, reason: string, message: string) => {
        record.status = code
        return failure(code, reason, message)
      }
      if (denied.has('patch secrets')) return refuse(403, 'Forbidden', `${forbiddenMessage('patch')}`)
      if (!store.has(id) && denied.has('create secrets')) {
        return refuse(403, 'Forbidden', forbiddenMessage('create'))
      }
      if (contentType !== 'application/apply-patch+yaml') {
        return refuse(415, 'UnsupportedMediaType', `the body of the request was in an unknown format`)
      }
      if (!query.fieldManager) {
        return refuse(
          400,
          'BadRequest',
          'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value',
        )
      }
      if (failures.n > 0) {
        failures = { ...failures, n: failures.n - 1 }
        return refuse(failures.status, 'InternalError', 'injected failure')
      }
      let body: CoreObject
      try {
        body = parseYaml(Buffer.concat(chunks).toString()) as CoreObject
      } catch {
        return refuse(400, 'BadRequest', 'invalid YAML')
      }
      record.body = body
      if (body?.apiVersion !== 'v1' || body.kind !== 'Secret' || body.metadata?.name !== name) {
        return refuse(422, 'Invalid', `Secret "${name}" is invalid`)
      }
      if (body.metadata.namespace && body.metadata.namespace !== namespace) {
        return refuse(
          400,
          'BadRequest',
          'the namespace of the object does not match the namespace on the request',
        )
      }
      const existing = store.get(id)
      const owner = existing?.metadata.managedFields?.[0]?.manager
      if (existing && owner !== query.fieldManager && query.force !== 'true') {
        return refuse(409, 'Conflict', `Apply failed with 1 conflict: conflict with "${owner}"`)
      }
      const stored: CoreObject = {
        ...body,
        metadata: {
          ...body.metadata,
          namespace,
          uid: existing?.metadata.uid ?? `uid-${++uid}`,
          managedFields: [{ manager: query.fieldManager, operation: 'Apply' }],
        },
      }
      store.set(id, stored)
      record.status = existing ? 200 : 201
      return answer(record.status, stored)

      function forbiddenMessage(verb: string) {
        return `secrets "${name}" is forbidden: User "${user}" cannot ${verb} resource "secrets" in API group "" in the namespace "${namespace}"`
      }
    }
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
    if (refuse(obj) && refuseBy === 'admission') {
      return failure(
        403,
        'Forbidden',
        `admission webhook "policy.example.com" denied the request: ${obj.kind} "${name}" is not allowed`,
      )
    }
    if (
      obj.apiVersion !== `${group}/${version}` ||
      !obj.kind ||
      !DNS1123.test(name) ||
      name.length > 253 ||
      refuse(obj)
    ) {
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
    const existing = objects.get(id)
    if (existing) {
      // As the generic registry's Create says it of an object with a deletionTimestamp.
      const exists = `${plural}.${group} "${name}" already exists`
      return failure(
        409,
        'AlreadyExists',
        existing.metadata.deletionTimestamp ? `object is being deleted: ${exists}` : exists,
      )
    }
    const stored: KubeObject = {
      ...obj,
      metadata: { ...obj.metadata, namespace: namespace!, uid: `uid-${++uid}` },
    }
    if (!dryRun) objects.set(id, stored)
    answer(201, stored)
  }

  let drip = { ms: 0, bytes: 1 }
  let latencyMs = 0
  let latencyOf: 'all' | 'stores' = 'all'
  let cut = false
  const server: Server = createServer({ key: key.privateKeyPem, cert }, (req, res) => {
    if (cut) {
      cut = false
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 100 })
      res.write('{"kind":"Secret",')
      setTimeout(() => res.destroy(), 20)
      return
    }
    if (drip.ms) {
      const { ms, bytes } = drip
      res.writeHead(200, { 'content-type': 'application/json' })
      const t = setInterval(() => res.write(' '.repeat(bytes)), ms)
      res.once('close', () => clearInterval(t))
      return
    }
    const serve = () => handle(req, res).catch(() => res.destroy())
    const dryRun = new URL(req.url ?? '/', 'https://x').searchParams.get('dryRun') === 'All'
    if (latencyMs && !(dryRun && latencyOf === 'stores')) setTimeout(serve, latencyMs)
    else serve()
  })
  let open = 0
  let peak = 0
  server.on('connection', (socket) => {
    peak = Math.max(peak, ++open)
    socket.once('close', () => open--)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  return {
    peakConnections: () => peak,
    received: () => received,
    cutNext() {
      cut = true
    },
    impostorNext(n, only) {
      impostor = n
      impostorOnly = only
    },
    hangUpNext() {
      hangUp = true
    },
    drip(ms, bytes = 1) {
      drip = { ms, bytes }
    },
    latency(ms, of = 'all') {
      latencyMs = ms
      latencyOf = of
    },
    url: `https://127.0.0.1:${port}${opts.pathPrefix ?? ''}`,
    caPem: ca.certPem,
    objects,
    requests,
    setToken(t) {
      token = t
    },
    failNext(n, status, retryAfterSec) {
      failures = { n, status, ...(retryAfterSec !== undefined ? { retryAfterSec } : {}) }
    },
    refuseObjects(r, by = 'schema') {
      refuse = r
      refuseBy = by
    },
    secrets,
    applies,
    addServiceAccount(namespace, name) {
      const id = `uid-sa-${++uid}`
      serviceAccounts.set(`${namespace}/${name}`, {
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name, namespace, uid: id },
      })
      return id
    },
    deny: (verb, resource) => void denied.add(`${verb} ${resource}`),
    allow: (verb, resource) => void denied.delete(`${verb} ${resource}`),
    async close() {
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}
