import type { IncomingMessage, ServerResponse } from 'node:http'
import { withDeadline } from '../../shared/deadline.js'
import { type CodedError, codedError } from '../../shared/errors.js'
import { type BodyResult, onBody } from '../../shared/http/body.js'
import { continueIfExpected } from '../../shared/http/expectations.js'
import { type Problem, sendJson, sendProblem } from '../../shared/http/problem.js'
import { targetPath } from '../../shared/http/target.js'
import { closeUnread } from '../../shared/http/unread-body.js'
import type { AccessToken, RoleToken } from '../../shared/identity/tokens.js'
import { isUpstreamError, refusedByProvider } from '../../shared/identity/tokens.js'
import { quoted } from '../../shared/log-quote.js'
import type { RepeatGate } from '../../shared/log-repeats.js'
import type { Logger } from '../../shared/logger.js'
import type { CacheKey, TokenCache } from './cache.js'
import { secondsLeft } from './expiry.js'
import { accessTokenKey, roleTokenKey } from './keys.js'

/**
 * The SIA token server API (compatible with k8s-athenz-sia): POST /roletoken, POST /accesstoken,
 * header mode on GET / (X-Athenz-Domain + X-Athenz-Role), and the JWKS of the signer. Client
 * errors are 400, provider failures 502, a handler past TOKEN_SERVER_TIMEOUT 503.
 */
export interface TokenApiOptions {
  roleTokens: TokenCache<RoleToken> | undefined
  accessTokens: TokenCache<AccessToken> | undefined
  jwks: (() => Promise<unknown>) | undefined
  roleAuthHeader: string
  /** TOKEN_SERVER_REST_API: the POST endpoints; header mode is always served. */
  restApi: boolean
  /**
   * Whether `proxy_for_principal` is honoured. ZTS authorises it itself; the local authority
   * would sign anything for anyone who reaches the port, so there it takes
   * TOKEN_ALLOW_PROXY_FOR_PRINCIPAL=true, and a request that names one gets 403 otherwise.
   */
  proxyForPrincipal: boolean
  /** TOKEN_EXPIRY in seconds: the expiry of a request that names none (keys.ts). */
  defaultExpirySec: number
  timeoutMs: number
  log: Logger
  /** Clients ask again at once: during an outage each fails as the last did, a record each. */
  repeats: RepeatGate
}

/** The most of a request body read (into memory): an SIA token request is a few short fields. */
export const MAX_BODY_BYTES = 64 * 1024
// Athenz names (segments of [a-zA-Z0-9_][a-zA-Z0-9_-]* joined by dots, as targets.ts takes them):
// domain "a.b-c", a principal "domain.service"; roles, one or more joined by commas. "a..b",
// "demo." or "reader," would be signed by the local authority and cached as keys of their own.
const SEGMENTS = '[a-zA-Z0-9_][a-zA-Z0-9_-]*(?:\\.[a-zA-Z0-9_][a-zA-Z0-9_-]*)*'
const NAME = new RegExp(`^${SEGMENTS}$`)
const ROLES = new RegExp(`^${SEGMENTS}(?:,${SEGMENTS})*$`)
/** The fields of each request body, as SIA decodes them (DisallowUnknownFields). */
const ROLE_TOKEN_FIELDS = new Set(['domain', 'role', 'proxy_for_principal', 'min_expiry', 'max_expiry'])
const ACCESS_TOKEN_FIELDS = new Set(['domain', 'role', 'proxy_for_principal', 'expiry'])

/** A request the client must fix: 4xx with this status. */
type ClientError = CodedError & { status: number }

function clientError(message: string, status = 400): ClientError {
  return Object.assign(codedError('ERR_TOKEN_CLIENT', message), { status })
}

function isClientError(err: unknown): err is ClientError {
  return (err as Partial<CodedError>)?.code === 'ERR_TOKEN_CLIENT'
}

/** A field SIA does not know is refused, as SIA refuses it: a misspelt `expires_in` is not ignored. */
function knownFields(body: Record<string, unknown>, fields: ReadonlySet<string>): Record<string, unknown> {
  for (const field of Object.keys(body)) {
    if (!fields.has(field))
      throw clientError(`unknown field "${quoted(field)}" (expected ${[...fields].join(', ')})`)
  }
  return body
}

function parseJson(read: BodyResult): Record<string, unknown> {
  if (!read.ok) {
    if (read.reason === 'too-large') throw clientError('request body too large', 413)
    throw clientError(read.reason === 'not-utf8' ? 'request body is not UTF-8' : 'request body aborted')
  }
  let v: unknown
  try {
    v = JSON.parse(read.text || '{}')
  } catch (err) {
    throw clientError(`invalid JSON body: ${(err as Error).message}`)
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw clientError('expected a JSON object')
  return v as Record<string, unknown>
}

/**
 * What a step of an answer gives back: nothing once it has answered, the promise of its answer,
 * or LATER when it has handed the request on (to the body's arrival) and settles it there. A
 * cached token is answered in the tick of the request's last byte: no promise on the hot path.
 */
const LATER = Symbol('later')
type Reply = undefined | Promise<void> | typeof LATER

function str(body: Record<string, unknown>, field: string, pattern: RegExp, required: boolean): string {
  const v = body[field]
  if (v === undefined || v === null || v === '') {
    if (required) throw clientError(`${field} is required`)
    return ''
  }
  if (typeof v !== 'string' || !pattern.test(v)) throw clientError(`${field} is not a valid Athenz name`)
  return v
}

function seconds(body: Record<string, unknown>, field: string): number {
  const v = body[field] ?? 0
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw clientError(`${field} must be a whole number of seconds >= 0`)
  }
  return v
}

const PROXY_REFUSED =
  'proxy_for_principal is not allowed: the local authority honours it only with TOKEN_ALLOW_PROXY_FOR_PRINCIPAL=true'

const TITLES: Record<number, string> = { 403: 'Forbidden', 404: 'Not Found', 413: 'Payload Too Large' }

function enabled<V>(cache: TokenCache<V> | undefined, type: string): TokenCache<V> {
  if (!cache) throw clientError(`${type} is disabled by TOKEN_TYPE`, 404)
  return cache
}

/**
 * A cached token object is answered many times until it is refreshed (a new object): serialise it
 * and build its headers once, or once a second for an access token, whose `expires_in` is what is
 * left of its lifetime (expiry.ts). Weak, so a refreshed or evicted token takes its answer with it.
 */
const answers = new WeakMap<object, { body: string; headers: string[]; left: number | undefined }>()
function sendToken(res: ServerResponse, token: object): void {
  const left = secondsLeft(token)
  let a = answers.get(token)
  if (a === undefined || a.left !== left) {
    const body = JSON.stringify(left === undefined ? token : { ...token, expires_in: left })
    a = {
      body,
      headers: ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body))],
      left,
    }
    answers.set(token, a)
  }
  res.writeHead(200, a.headers)
  res.end(a.body)
}

function reply(res: ServerResponse, token: object | Promise<object>): Reply {
  if (token instanceof Promise) return token.then((t) => sendToken(res, t))
  sendToken(res, token)
  return undefined
}

export interface TokenApi {
  handle(req: IncomingMessage, res: ServerResponse): void
}

export function createTokenApi(opts: TokenApiOptions): TokenApi {
  const { log, repeats } = opts
  const proxy = (body: Record<string, unknown>) => {
    const p = str(body, 'proxy_for_principal', NAME, false)
    if (p && !opts.proxyForPrincipal) throw clientError(PROXY_REFUSED, 403)
    return p
  }

  /**
   * A cached token answers at once; only a miss waits for the provider, and only that wait is
   * bounded by TOKEN_SERVER_TIMEOUT (the body read is bounded by the server's requestTimeout).
   */
  function token<V>(cache: TokenCache<V> | undefined, type: string, key: CacheKey): V | Promise<V> {
    const c = enabled(cache, type)
    const hit = c.peek(key)
    if (hit !== undefined) return hit
    // The deadline is the request's stop as a waiter: once every request waiting for a fetch has
    // given up, the fetch is aborted (cache.ts).
    return withDeadline(
      opts.timeoutMs,
      (signal) => c.get(key, signal),
      () => codedError('ERR_TOKEN_DEADLINE', `no token within ${opts.timeoutMs}ms`),
    )
  }

  function route(req: IncomingMessage, res: ServerResponse, t0: number): Reply {
    const path = targetPath(req.url)
    if (req.method === 'POST' && opts.restApi && path === '/roletoken') {
      return postToken(
        req,
        res,
        t0,
        opts.roleTokens,
        'roletoken',
        ROLE_TOKEN_FIELDS,
        (body, domain, role, proxyFor) =>
          roleTokenKey(
            domain,
            role,
            proxyFor,
            seconds(body, 'min_expiry'),
            seconds(body, 'max_expiry'),
            opts.defaultExpirySec,
          ),
      )
    }
    if (req.method === 'POST' && opts.restApi && path === '/accesstoken') {
      return postToken(
        req,
        res,
        t0,
        opts.accessTokens,
        'accesstoken',
        ACCESS_TOKEN_FIELDS,
        (body, domain, role, proxyFor) =>
          accessTokenKey(domain, role, proxyFor, seconds(body, 'expiry'), opts.defaultExpirySec),
      )
    }
    // Only the two POST routes read a body: any other answer leaves one unread.
    closeUnread(req, res)
    // Not with header mode's two headers: an auth sub-request for a request to /jwks asks for tokens.
    const asksTokens =
      req.headers['x-athenz-domain'] !== undefined && req.headers['x-athenz-role'] !== undefined
    // HEAD as GET (Node sends no body): a probe of the JWKS with HEAD got header mode's 400.
    const reads = req.method === 'GET' || req.method === 'HEAD'
    if (reads && !asksTokens && (path === '/oauth2/keys' || path === '/jwks')) {
      if (!opts.jwks) throw clientError('this provider does not publish a JWKS', 404)
      return opts.jwks().then((keys) => sendJson(res, 200, keys))
    }
    // As SIA: every other request is header mode, whatever its method and path (an auth
    // sub-request of a proxy keeps the original request's).
    return headerMode(req, res)
  }

  /** POST /roletoken and /accesstoken: the cache key from the JSON body, then the token. */
  function postToken<V extends object>(
    req: IncomingMessage,
    res: ServerResponse,
    t0: number,
    cache: TokenCache<V> | undefined,
    type: string,
    fields: ReadonlySet<string>,
    keyOf: (body: Record<string, unknown>, domain: string, role: string, proxyFor: string) => CacheKey,
  ): Reply {
    continueIfExpected(req, res)
    onBody(req, MAX_BODY_BYTES, undefined, (read) =>
      settle(req, res, t0, () => {
        const body = knownFields(parseJson(read), fields)
        const domain = str(body, 'domain', NAME, true)
        const role = str(body, 'role', ROLES, false)
        const proxyFor = proxy(body)
        return reply(res, token(cache, type, keyOf(body, domain, role, proxyFor)))
      }),
    )
    return LATER
  }

  /** Header mode: the tokens come back in response headers, for a proxy to forward as they are. */
  function headerMode(req: IncomingMessage, res: ServerResponse): Reply {
    const domain = req.headers['x-athenz-domain']
    const role = req.headers['x-athenz-role']
    if (typeof domain !== 'string' || typeof role !== 'string' || !domain || !role) {
      throw clientError(
        `http headers not set: X-Athenz-Domain[${quoted(String(domain ?? ''))}] X-Athenz-Role[${quoted(String(role ?? ''))}]`,
      )
    }
    if (!NAME.test(domain) || !ROLES.test(role)) throw clientError('X-Athenz-Domain or X-Athenz-Role invalid')
    const expiry = opts.defaultExpirySec
    const atOrWait =
      opts.accessTokens &&
      token(opts.accessTokens, 'accesstoken', accessTokenKey(domain, role, '', 0, expiry))
    const rtOrWait =
      opts.roleTokens && token(opts.roleTokens, 'roletoken', roleTokenKey(domain, role, '', 0, 0, expiry))
    // Both cached (the common case): answered now.
    if (atOrWait instanceof Promise || rtOrWait instanceof Promise) {
      return Promise.all([atOrWait, rtOrWait]).then(([at, rt]) => sendHeaders(res, at, rt))
    }
    sendHeaders(res, atOrWait, rtOrWait)
    return undefined
  }

  // Made once, not per request: the bundles keep function names, and a named closure made per
  // request costs a defineProperty each time (scripts/bundle.mjs).
  function sendHeaders(res: ServerResponse, at: AccessToken | undefined, rt: RoleToken | undefined): void {
    const answer = headerAnswer(at, rt)
    res.writeHead(200, answer.headers)
    res.end(answer.body)
  }

  /**
   * The header-mode answer for one pair of cached tokens, built once: the same pair comes back for
   * the same (domain, role) until the cache refreshes one of them (a new object). The body is
   * SIA's: `{"accesstoken","roletoken"}`, each present when its type is served.
   */
  const answers = new WeakMap<
    object,
    { partner: object | undefined; body: string; headers: Record<string, string> }
  >()
  function headerAnswer(at: AccessToken | undefined, rt: RoleToken | undefined) {
    const anchor = at ?? rt
    const cached = anchor && answers.get(anchor)
    if (cached && cached.partner === (at ? rt : undefined)) return cached
    const body = JSON.stringify({
      ...(at ? { accesstoken: at.access_token } : {}),
      ...(rt ? { roletoken: rt.token } : {}),
    })
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
    }
    if (at) headers.authorization = `bearer ${at.access_token}`
    if (rt) headers[opts.roleAuthHeader.toLowerCase()] = rt.token
    const built = { partner: at ? rt : undefined, body, headers }
    if (anchor) answers.set(anchor, built)
    return built
  }

  function fail(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    if (res.headersSent) return void res.destroy()
    closeUnread(req, res) // a 404 or 413 before the body is read, or part way through it
    sendProblem(res, problemOf(err))
  }

  function problemOf(err: unknown): Problem {
    if (isClientError(err)) {
      repeats.log(
        'warn',
        { event: 'token.request.rejected', status: err.status },
        err.message,
        { reason: err.message },
        'client error',
      )
      return { status: err.status, title: TITLES[err.status] ?? 'Bad Request', detail: err.message }
    }
    const refused = refusedByProvider(err)
    if (refused) {
      repeats.log(
        'warn',
        { event: 'token.request.refused', status: refused },
        (err as Error).message,
        { reason: (err as Error).message },
        'refused by ZTS',
      )
      return { status: refused, title: TITLES[refused] ?? 'Bad Request', detail: (err as Error).message }
    }
    if ((err as Partial<CodedError>)?.code === 'ERR_TOKEN_DEADLINE') {
      repeats.log(
        'error',
        { event: 'token.request.timeout' },
        '',
        { ms: opts.timeoutMs },
        'token request timed out',
      )
      return { status: 503, title: 'Service Unavailable', detail: (err as Error).message }
    }
    const upstream = isUpstreamError(err)
    const status = upstream ? 502 : 500
    repeats.log(
      'error',
      { event: 'token.request.failed', status },
      (err as Error)?.message ?? '',
      { err },
      'token request failed',
    )
    return {
      status,
      title: upstream ? 'Bad Gateway' : 'Internal Server Error',
      detail: upstream ? (err as Error).message : 'internal error',
    }
  }

  function done(req: IncomingMessage, res: ServerResponse, t0: number): void {
    // Applications fetch tokens on every call of their own: a success is a debug record (at
    // info it halves the server's throughput and floods the pod log), a failure is not.
    const failed = res.statusCode >= 400
    if (!failed && !log.isLevelEnabled('debug')) return
    const fields = { event: 'token.request', status: res.statusCode }
    const path = quoted(req.url ?? '')
    const detail = { method: req.method, path, ms: Math.round((performance.now() - t0) * 10) / 10 }
    const msg = `${req.method} ${path} ${res.statusCode}`
    if (failed) repeats.log('info', fields, `${req.method} ${path}`, detail, msg)
    else log.debug({ ...fields, ...detail }, msg)
  }

  /** Runs a step of the answer to a request; once answered, logs it; a failure is answered. */
  function settle(req: IncomingMessage, res: ServerResponse, t0: number, step: () => Reply): void {
    let pending: Reply
    try {
      pending = step()
    } catch (err) {
      pending = Promise.reject(err)
    }
    if (pending === undefined) done(req, res, t0)
    else if (pending !== LATER)
      pending.then(
        () => done(req, res, t0),
        (err: unknown) => {
          fail(req, res, err)
          done(req, res, t0)
        },
      )
  }

  return {
    handle(req, res) {
      const t0 = performance.now()
      settle(req, res, t0, () => route(req, res, t0))
    },
  }
}
