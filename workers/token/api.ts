import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { sendJson, sendProblem } from '../../shared/http/problem.js'
import type { AccessToken, RoleToken } from '../../shared/identity/tokens.js'
import { isUpstreamError } from '../../shared/identity/tokens.js'
import type { Logger } from '../../shared/logger.js'
import type { CacheKey, TokenCache } from './cache.js'

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
  timeoutMs: number
  log: Logger
}

const MAX_BODY_BYTES = 64 * 1024
// Athenz names: domain "a.b-c", roles "r1,r2"; a principal "domain.service".
const NAME = /^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$/
const ROLES = /^[a-zA-Z0-9_][a-zA-Z0-9_.,-]*$/

class ClientError extends Error {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message)
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0
  const chunks: Buffer[] = []
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY_BYTES) throw new ClientError('request body too large', 413)
    chunks.push(chunk)
  }
  let v: unknown
  try {
    v = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}')
  } catch (err) {
    throw new ClientError(`invalid JSON body: ${(err as Error).message}`)
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ClientError('expected a JSON object')
  return v as Record<string, unknown>
}

function str(body: Record<string, unknown>, field: string, pattern: RegExp, required: boolean): string {
  const v = body[field]
  if (v === undefined || v === null || v === '') {
    if (required) throw new ClientError(`${field} is required`)
    return ''
  }
  if (typeof v !== 'string' || !pattern.test(v)) throw new ClientError(`${field} is not a valid Athenz name`)
  return v
}

function seconds(body: Record<string, unknown>, field: string): number {
  const v = body[field] ?? 0
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new ClientError(`${field} must be a whole number of seconds >= 0`)
  }
  return v
}

function keyFrom(domain: string, role: string, proxy: string, min: number, max: number): CacheKey {
  return { domain, role, proxyForPrincipal: proxy, minExpiry: min, maxExpiry: max }
}

function enabled<V>(cache: TokenCache<V> | undefined, type: string): TokenCache<V> {
  if (!cache) throw new ClientError(`${type} is disabled by TOKEN_TYPE`, 404)
  return cache
}

export function createTokenApi(opts: TokenApiOptions) {
  const { log } = opts

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    if (req.method === 'POST' && path === '/roletoken') {
      const body = await readJson(req)
      const key = keyFrom(
        str(body, 'domain', NAME, true),
        str(body, 'role', ROLES, false),
        str(body, 'proxy_for_principal', NAME, false),
        seconds(body, 'min_expiry'),
        seconds(body, 'max_expiry'),
      )
      return sendJson(res, 200, await enabled(opts.roleTokens, 'roletoken').get(key))
    }
    if (req.method === 'POST' && path === '/accesstoken') {
      const body = await readJson(req)
      const key = keyFrom(
        str(body, 'domain', NAME, true),
        str(body, 'role', ROLES, false),
        str(body, 'proxy_for_principal', NAME, false),
        0,
        seconds(body, 'expiry'),
      )
      return sendJson(res, 200, await enabled(opts.accessTokens, 'accesstoken').get(key))
    }
    if (req.method === 'GET' && (path === '/oauth2/keys' || path === '/jwks')) {
      if (!opts.jwks) throw new ClientError('this provider does not publish a JWKS', 404)
      return sendJson(res, 200, await opts.jwks())
    }
    if (req.method === 'GET' && path === '/') return headerMode(req, res)
    throw new ClientError(`no route for ${req.method} ${path}`, 404)
  }

  /** Header mode: the tokens come back in response headers, for a proxy to forward as they are. */
  async function headerMode(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const domain = req.headers['x-athenz-domain']
    const role = req.headers['x-athenz-role']
    if (typeof domain !== 'string' || typeof role !== 'string' || !domain || !role) {
      throw new ClientError(
        `http headers not set: X-Athenz-Domain[${domain ?? ''}] X-Athenz-Role[${role ?? ''}]`,
      )
    }
    if (!NAME.test(domain) || !ROLES.test(role))
      throw new ClientError('X-Athenz-Domain or X-Athenz-Role invalid')
    const key = keyFrom(domain, role, '', 0, 0)
    const [at, rt] = await Promise.all([opts.accessTokens?.get(key), opts.roleTokens?.get(key)])
    const headers: Record<string, string> = {}
    if (at) headers.authorization = `bearer ${at.access_token}`
    if (rt) headers[opts.roleAuthHeader.toLowerCase()] = rt.token
    sendJson(
      res,
      200,
      {
        domain,
        role,
        ...(at
          ? { access_token: at.access_token, token_type: at.token_type, expires_in: at.expires_in }
          : {}),
        ...(rt ? { role_token: rt.token, expiryTime: rt.expiryTime } : {}),
      },
      headers,
    )
  }

  return (req: IncomingMessage, res: ServerResponse): void => {
    const requestId = randomUUID()
    const t0 = performance.now()
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), opts.timeoutMs)
    })
    const fail = (err: unknown) => {
      if (res.headersSent) return void res.destroy()
      if (err instanceof ClientError) {
        log.warn(
          { event: 'token.request.rejected', requestId, status: err.status, reason: err.message },
          'client error',
        )
        return sendProblem(res, {
          status: err.status,
          title: err.status === 404 ? 'Not Found' : 'Bad Request',
          detail: err.message,
        })
      }
      const upstream = isUpstreamError(err)
      log.error({ event: 'token.request.failed', requestId, err }, 'token request failed')
      sendProblem(res, {
        status: upstream ? 502 : 500,
        title: upstream ? 'Bad Gateway' : 'Internal Server Error',
        detail: upstream ? (err as Error).message : 'internal error',
      })
    }
    Promise.race([route(req, res).then(() => 'done' as const), timedOut])
      .then((outcome) => {
        if (outcome === 'timeout' && !res.headersSent) {
          log.error(
            { event: 'token.request.timeout', requestId, ms: opts.timeoutMs },
            'token request timed out',
          )
          sendProblem(res, {
            status: 503,
            title: 'Service Unavailable',
            detail: `no token within ${opts.timeoutMs}ms`,
          })
        }
      }, fail)
      .finally(() => {
        clearTimeout(timer)
        // Applications fetch tokens on every call of their own: a success is a debug record (at
        // info it halves the server's throughput and floods the pod log), a failure is not.
        log[res.statusCode < 400 ? 'debug' : 'info'](
          {
            event: 'token.request',
            requestId,
            method: req.method,
            path: req.url,
            status: res.statusCode,
            ms: Math.round((performance.now() - t0) * 10) / 10,
          },
          `${req.method} ${req.url} ${res.statusCode}`,
        )
      })
  }
}
