import { createHash, createPublicKey, randomBytes, sign } from 'node:crypto'
import type { Authority } from './local-authority.js'
import type { AccessToken, AccessTokenRequest, RoleToken, RoleTokenRequest } from './tokens.js'

/** Role tokens and JWT access tokens signed by the local authority (the `local` provider). */

export const LOCAL_ISSUER = 'sia-supervisor-local'

/** Key id of the authority's public key: the same value in every token header and in the JWKS. */
export function keyId(ca: Authority): string {
  const der = createPublicKey(ca.key).export({ type: 'spki', format: 'der' })
  return createHash('sha256').update(der).digest('base64url').slice(0, 16)
}

/** A lifetime the authority signs: whole seconds, positive, and a date a client can represent. */
function checkTtl(ttlSec: number): number {
  if (!Number.isSafeInteger(ttlSec) || ttlSec <= 0 || ttlSec > 10 * 365 * 24 * 3600) {
    throw new RangeError(`token lifetime out of range: ${ttlSec}s`)
  }
  return ttlSec
}

function roleList(role: string): string[] {
  return role
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean)
}

export function issueRoleToken(
  ca: Authority,
  principal: string,
  req: RoleTokenRequest,
  ttlSec: number,
): RoleToken {
  const now = Math.floor(Date.now() / 1000)
  const expiryTime = now + checkTtl(ttlSec)
  const fields = [
    'v=Z1',
    `d=${req.domain}`,
    `r=${roleList(req.role).join(',')}`,
    `p=${principal}`,
    ...(req.proxyForPrincipal ? [`proxy=${req.proxyForPrincipal}`] : []),
    `a=${randomBytes(8).toString('hex')}`,
    `t=${now}`,
    `e=${expiryTime}`,
    `k=${keyId(ca)}`,
  ]
  const unsigned = fields.join(';')
  const s = sign('sha256', Buffer.from(unsigned), ca.key).toString('base64url')
  return { token: `${unsigned};s=${s}`, expiryTime }
}

export function issueAccessToken(
  ca: Authority,
  principal: string,
  req: AccessTokenRequest,
  ttlSec: number,
): AccessToken {
  const now = Math.floor(Date.now() / 1000)
  checkTtl(ttlSec)
  const roles = roleList(req.role)
  const scope = roles.length ? roles.map((r) => `${req.domain}:role.${r}`).join(' ') : `${req.domain}:domain`
  const header = { alg: 'RS256', typ: 'at+jwt', kid: keyId(ca) }
  const claims = {
    iss: LOCAL_ISSUER,
    sub: req.proxyForPrincipal || principal,
    ...(req.proxyForPrincipal ? { proxy: principal } : {}),
    aud: req.domain,
    scope,
    scp: roles,
    jti: randomBytes(12).toString('base64url'),
    iat: now,
    exp: now + ttlSec,
  }
  const enc = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url')
  const unsigned = `${enc(header)}.${enc(claims)}`
  const sig = sign('sha256', Buffer.from(unsigned), ca.key).toString('base64url')
  return { access_token: `${unsigned}.${sig}`, token_type: 'Bearer', expires_in: ttlSec, scope }
}

/** The JWKS (RFC 7517) a client fetches to verify the local authority's access tokens. */
export function jwks(ca: Authority): { keys: Record<string, unknown>[] } {
  const jwk = createPublicKey(ca.key).export({ format: 'jwk' })
  return { keys: [{ ...jwk, kid: keyId(ca), alg: 'RS256', use: 'sig' }] }
}
