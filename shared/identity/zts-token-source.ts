import { codedError } from '../errors.js'
import type { AccessToken, RoleToken, TokenSource } from './tokens.js'
import type { ZtsClient } from './zts-client.js'

/**
 * A 2xx that is not a token (a proxy's login page, a token without its expiry) is a failure of the
 * provider: 502 and counted, never a token cached for ever (its expiry NaN) or a 500.
 */
function checked<T>(answer: unknown, ok: (a: Record<string, unknown>) => boolean, what: string): T {
  if (typeof answer === 'object' && answer !== null && ok(answer as Record<string, unknown>))
    return answer as T
  throw codedError('ERR_UPSTREAM', `ZTS answered 2xx without ${what}`)
}
const text = (v: unknown) => typeof v === 'string' && v !== ''
const seconds = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v > 0

/**
 * ZTS reads a lifetime as a 32-bit integer and caps it at its own maximum: a longer one asked (a
 * client's `expiry` may be any whole number) is sent as the longest it can read, and ZTS caps it,
 * where `1e+300` would have been refused, and the client answered 400 for ZTS's parse error.
 */
const INT32_MAX = 2 ** 31 - 1
const lifetime = (sec: number) => String(Math.min(sec, INT32_MAX))

/** Tokens from Athenz ZTS over mutual TLS: GET /domain/{d}/token and POST /oauth2/token. */
export function createZtsTokenSource(client: ZtsClient, defaultExpirySec: number): TokenSource {
  return {
    async roleToken(req, signal) {
      const q = new URLSearchParams()
      if (req.role) q.set('role', req.role)
      // As SIA asks: TOKEN_EXPIRY is the least lifetime wanted, not the most.
      const min = req.minExpiry || defaultExpirySec
      const max = req.maxExpiry
      if (min) q.set('minExpiryTime', lifetime(min))
      if (max) q.set('maxExpiryTime', lifetime(max))
      if (req.proxyForPrincipal) q.set('proxyForPrincipal', req.proxyForPrincipal)
      const qs = q.size ? `?${q}` : ''
      const answer = await client.call(
        'GET',
        `/domain/${encodeURIComponent(req.domain)}/token${qs}`,
        undefined,
        signal,
      )
      const token = checked<RoleToken>(
        answer,
        (a) => text(a.token) && seconds(a.expiryTime),
        'a role token (token, expiryTime)',
      )
      // Expired already by this host's clock (ZTS's ahead of it, or a cache in between): served,
      // it was refused by whoever checks it, and written to a target's token file.
      if (token.expiryTime * 1000 <= Date.now()) {
        throw codedError(
          'ERR_UPSTREAM',
          `ZTS answered a role token that expired at ${new Date(token.expiryTime * 1000).toISOString()}`,
        )
      }
      return token
    },
    async accessToken(req, signal) {
      const roles = req.role.split(',').filter(Boolean)
      const form: Record<string, string> = {
        grant_type: 'client_credentials',
        scope: roles.length ? roles.map((r) => `${req.domain}:role.${r}`).join(' ') : `${req.domain}:domain`,
      }
      const expiry = req.expiry || defaultExpirySec
      if (expiry) form.expires_in = lifetime(expiry)
      if (req.proxyForPrincipal) form.proxy_for_principal = req.proxyForPrincipal
      const answer = await client.call('POST', '/oauth2/token', { form }, signal)
      return checked<AccessToken>(
        answer,
        (a) => text(a.access_token) && seconds(a.expires_in),
        'an access token (access_token, expires_in)',
      )
    },
  }
}
