import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TLSSocket } from 'node:tls'
import { buildCsr, type CsrContents, readCsr, signCsr } from '../../shared/identity/csr.js'
import { generateRsaKey, loadOrCreateAuthority } from '../../shared/identity/local-authority.js'
import { issueAccessToken, issueRoleToken } from '../../shared/identity/local-tokens.js'
import { issueCertificate } from './issue-certificate.js'

/**
 * An Athenz ZTS double on a real HTTPS socket: the real paths and bodies, client-certificate
 * authentication for everything but register, `{code, message}` errors. Built on the project's
 * forge authority. Counts calls per route and keeps every CSR it received.
 */
export type Route = 'register' | 'refresh' | 'delete' | 'rolecert' | 'roletoken' | 'oauth2' | 'cacerts'

export interface Received {
  route: Route
  csr?: CsrContents
  /** CN and serial of the client certificate, when one was presented. */
  clientCN?: string
  clientSerial?: string
  body?: unknown
  /** The client closed the request before it was answered (it gave up, or aborted). */
  abandoned?: boolean
}

export interface ZtsDouble {
  /** e.g. https://127.0.0.1:1234/zts/v1 */
  url: string
  caPem: string
  caFile: string
  /** The intermediate certificate of the CA bundle named `athenz` (GET /cacerts/athenz). */
  intermediatePem: string
  counts: Record<Route, number>
  received: Received[]
  /** The next `times` calls of `route` answer `status`. */
  failNext(route: Route, status: number, times: number): void
  /** Calls of `route` wait `ms` before answering (0: no delay). */
  delay(route: Route, ms: number): void
  /**
   * Calls of `route` answer 200 at once, then `bytes` of body every `ms`, never ending: a ZTS (or
   * a proxy) that trickles, which no idle timeout catches, or one that floods (0: off).
   */
  drip(route: Route, ms: number, bytes?: number): void
  /** The next call of `route` returns a certificate for another key. */
  wrongKeyNext(route: Route): void
  /** The next call of `route` answers `status` (200) with `body` as it is (a proxy's page, a token without its expiry). */
  answerNext(route: Route, body: string, contentType?: string, status?: number): void
  /** Certificates issued from now on (instance, refresh, role) live `ms` (an hour by default). */
  issueFor(ms: number): void
  /** A key and certificate issued by the double's CA (for the files provider), valid for 127.0.0.1. */
  /** A key and a certificate for it from this ZTS's authority (as a third party installs them). */
  issue(commonName: string, keyType?: 'rsa' | 'ec'): Promise<{ keyPem: string; certPem: string }>
  close(): Promise<void>
}

const VALIDITY_MS = 3600_000
/** The longest token lifetime ZTS issues (its own setting there; 30 days here): longer asks are capped. */
const MAX_LIFETIME_SEC = 30 * 24 * 3600

/**
 * A lifetime parameter as ZTS reads it, a 32-bit integer (Java's parseInt): absent is 0, anything
 * else it cannot read (`1e+300`, `-1`, 2^31) NaN, which ZTS answers 400.
 */
function int32(v: string | null): number {
  if (v === null) return 0
  return /^\d{1,10}$/.test(v) && Number(v) <= 2 ** 31 - 1 ? Number(v) : Number.NaN
}

export async function startZtsDouble(): Promise<ZtsDouble> {
  const dir = mkdtempSync(join(tmpdir(), 'zts-double-'))
  const ca = await loadOrCreateAuthority(dir)
  const caKeyPem = ca.key.export({ type: 'pkcs8', format: 'pem' }).toString()
  const caFile = join(dir, 'zts-ca.pem')
  writeFileSync(caFile, ca.certPem)
  const serverKey = await generateRsaKey()
  const serverCert = issueCertificate(ca, {
    publicKeyPem: serverKey.publicKeyPem,
    commonName: 'zts.double',
    dnsNames: ['localhost'],
    ips: ['127.0.0.1'],
    validityMs: VALIDITY_MS,
  })
  const spareKey = await generateRsaKey()
  const intermediateKey = await generateRsaKey()
  const intermediatePem = issueCertificate(ca, {
    publicKeyPem: intermediateKey.publicKeyPem,
    commonName: 'zts.double intermediate',
    validityMs: VALIDITY_MS,
  })
  const bundles = new Map([['athenz', intermediatePem]])

  const counts: Record<Route, number> = {
    register: 0,
    refresh: 0,
    delete: 0,
    rolecert: 0,
    roletoken: 0,
    oauth2: 0,
    cacerts: 0,
  }
  const received: Received[] = []
  const failures = new Map<Route, { status: number; times: number }>()
  const delays = new Map<Route, number>()
  // A delayed answer's timer, cleared by close(): a test's held request must not keep its
  // process up for the rest of the delay.
  const timers = new Set<NodeJS.Timeout>()
  const held = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t)
        resolve()
      }, ms)
      timers.add(t)
    })
  const wrongKey = new Set<Route>()
  let issuedValidityMs = VALIDITY_MS
  const raw = new Map<Route, { body: string; contentType: string; status: number }>()
  const drips = new Map<Route, { ms: number; bytes: number }>()

  const send = (res: ServerResponse, status: number, body?: unknown) => {
    const text = body === undefined ? '' : JSON.stringify(body)
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
    res.end(text)
  }
  const error = (res: ServerResponse, code: number, message: string) => send(res, code, { code, message })

  const sign = (csrPem: string, route: Route) => {
    if (wrongKey.delete(route)) {
      const csr = readCsr(csrPem)
      return issueCertificate(ca, {
        publicKeyPem: spareKey.publicKeyPem,
        commonName: csr.commonName,
        validityMs: VALIDITY_MS,
      })
    }
    return signCsr({ caKeyPem, caCertPem: ca.certPem, csrPem, validityMs: issuedValidityMs })
  }

  async function readBody(req: IncomingMessage): Promise<string> {
    let text = ''
    for await (const chunk of req as AsyncIterable<Buffer>) text += chunk.toString('utf8')
    return text
  }

  function routeOf(method: string, path: string): Route | undefined {
    if (method === 'POST' && path === '/instance') return 'register'
    if (/^\/instance\/[^/]+\/[^/]+\/[^/]+\/[^/]+$/.test(path)) {
      return method === 'POST' ? 'refresh' : method === 'DELETE' ? 'delete' : undefined
    }
    if (method === 'POST' && path === '/rolecert') return 'rolecert'
    if (method === 'GET' && /^\/domain\/[^/]+\/token$/.test(path)) return 'roletoken'
    if (method === 'POST' && path === '/oauth2/token') return 'oauth2'
    if (method === 'GET' && /^\/cacerts\/[^/]+$/.test(path)) return 'cacerts'
    return undefined
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://zts')
    if (!url.pathname.startsWith('/zts/v1/')) return error(res, 404, 'not found')
    const path = url.pathname.slice('/zts/v1'.length)
    const route = routeOf(req.method ?? '', path)
    if (!route) return error(res, 404, `no route ${req.method} ${path}`)
    counts[route]++
    const socket = req.socket as TLSSocket
    // On Node 22, a TLS 1.3 connection resumed from a session without a client certificate says
    // it is authorized, with an empty certificate (nodejs/node#35317): no certificate, as at first.
    const cert = socket.authorized ? socket.getPeerCertificate() : undefined
    const peer = cert?.subject ? cert : undefined
    const rec: Received = {
      route,
      ...(peer ? { clientCN: String(peer.subject.CN), clientSerial: peer.serialNumber } : {}),
    }
    received.push(rec)
    res.once('close', () => {
      if (!res.writableFinished) rec.abandoned = true
    })
    const text = await readBody(req)
    const wait = delays.get(route)
    if (wait) await held(wait)
    const drip = drips.get(route)
    if (drip?.ms) {
      res.writeHead(200, { 'content-type': 'application/json' })
      const t = setInterval(() => res.write(' '.repeat(drip.bytes)), drip.ms)
      res.once('close', () => clearInterval(t))
      return
    }
    const answer = raw.get(route)
    if (answer) {
      raw.delete(route)
      res.writeHead(answer.status, { 'content-type': answer.contentType })
      return void res.end(answer.body)
    }
    const fail = failures.get(route)
    if (fail && fail.times > 0) {
      fail.times--
      return error(res, fail.status, `injected failure of ${route}`)
    }
    if (route !== 'register' && !peer) return error(res, 401, 'client certificate required')

    switch (route) {
      case 'register':
      case 'refresh': {
        const body = JSON.parse(text) as { csr: string; provider?: string; domain?: string; service?: string }
        rec.body = body
        rec.csr = readCsr(body.csr)
        const [, provider, domain, service, id] =
          route === 'refresh' ? path.split('/').slice(1) : ['', body.provider, body.domain, body.service]
        if (route === 'refresh' && rec.clientCN !== `${domain}.${service}`) {
          return error(res, 403, `client ${rec.clientCN} may not refresh ${domain}.${service}`)
        }
        const instanceId =
          id ??
          rec.csr.uris
            .find((u) => u.startsWith('athenz://instanceid/'))
            ?.split('/')
            .pop() ??
          'unknown'
        return send(res, route === 'register' ? 201 : 200, {
          provider,
          name: `${domain}.${service}`,
          instanceId,
          x509Certificate: sign(body.csr, route),
          x509CertificateSigner: ca.certPem,
        })
      }
      case 'delete':
        return send(res, 204)
      case 'cacerts': {
        const name = decodeURIComponent(path.split('/')[2]!)
        const certs = bundles.get(name)
        if (!certs) return error(res, 404, `no CA bundle ${name}`)
        return send(res, 200, { name, certs })
      }
      case 'rolecert': {
        const body = JSON.parse(text) as { csr: string }
        rec.csr = readCsr(body.csr)
        return send(res, 200, { x509Certificate: sign(body.csr, route) })
      }
      case 'roletoken': {
        const domain = decodeURIComponent(path.split('/')[2]!)
        rec.body = Object.fromEntries(url.searchParams)
        const min = int32(url.searchParams.get('minExpiryTime'))
        const max = int32(url.searchParams.get('maxExpiryTime'))
        if (Number.isNaN(min) || Number.isNaN(max)) return error(res, 400, 'Invalid ExpiryTime')
        const req0 = {
          domain,
          role: url.searchParams.get('role') ?? '',
          proxyForPrincipal: url.searchParams.get('proxyForPrincipal') ?? '',
          minExpiry: min,
          maxExpiry: max,
        }
        // ZTS's lifetime: its default (here 1 h), at least the minimum asked, at most the maximum.
        return send(
          res,
          200,
          issueRoleToken(ca, rec.clientCN!, req0, Math.min(max || Math.max(min, 3600), MAX_LIFETIME_SEC)),
        )
      }
      case 'oauth2': {
        const form = new URLSearchParams(text)
        rec.body = Object.fromEntries(form)
        if (form.get('grant_type') !== 'client_credentials') return error(res, 400, 'unsupported grant_type')
        const scope = form.get('scope') ?? ''
        const m = /^([^:\s]+):(?:role\.(.+)|domain)$/.exec(scope.split(' ')[0] ?? '')
        if (!m) return error(res, 400, `invalid scope ${scope}`)
        const roles = scope
          .split(' ')
          .map((s) => s.split(':role.')[1])
          .filter(Boolean)
        const asked = int32(form.get('expires_in'))
        if (Number.isNaN(asked)) return error(res, 400, 'Invalid expires_in')
        const ttl = Math.min(asked || 3600, MAX_LIFETIME_SEC)
        const req0 = { domain: m[1]!, role: roles.join(','), proxyForPrincipal: '', expiry: ttl }
        return send(res, 200, issueAccessToken(ca, rec.clientCN!, req0, ttl))
      }
    }
  }

  const server: Server = createServer(
    {
      key: serverKey.privateKeyPem,
      cert: serverCert,
      ca: ca.certPem,
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, res) => {
      handle(req, res).catch((err: Error) => {
        if (!res.headersSent) error(res, 500, err.message)
      })
    },
  )
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port

  return {
    url: `https://127.0.0.1:${port}/zts/v1`,
    caPem: ca.certPem,
    caFile,
    intermediatePem,
    counts,
    received,
    failNext: (route, status, times) => failures.set(route, { status, times }),
    delay: (route, ms) => delays.set(route, ms),
    drip: (route, ms, bytes = 1) => drips.set(route, { ms, bytes }),
    wrongKeyNext: (route) => wrongKey.add(route),
    issueFor: (ms) => {
      issuedValidityMs = ms
    },
    answerNext: (route, body, contentType = 'application/json', status = 200) =>
      void raw.set(route, { body, contentType, status }),
    async issue(commonName, keyType = 'rsa') {
      if (keyType === 'ec') {
        const keyPem = generateKeyPairSync('ec', { namedCurve: 'P-256' })
          .privateKey.export({ type: 'pkcs8', format: 'pem' })
          .toString()
        const csrPem = buildCsr({ keyPem, commonName, dnsNames: [], uris: [], ips: ['127.0.0.1'] })
        return {
          keyPem,
          certPem: signCsr({ caKeyPem, caCertPem: ca.certPem, csrPem, validityMs: VALIDITY_MS }),
        }
      }
      const k = await generateRsaKey()
      return {
        keyPem: k.privateKeyPem,
        certPem: issueCertificate(ca, {
          publicKeyPem: k.publicKeyPem,
          commonName,
          ips: ['127.0.0.1'],
          validityMs: VALIDITY_MS,
        }),
      }
    },
    close: () =>
      new Promise((r) => {
        for (const t of timers) clearTimeout(t)
        timers.clear()
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

/** The settings that point the sidecar at this double as its ZTS, with the double's CA trusted. */
export function providerEnv(zts: ZtsDouble): Record<string, string> {
  return { ENDPOINT: zts.url, PROVIDER_SERVICE: 'athenz.k8s', SERVER_CA_CERT: zts.caFile }
}
