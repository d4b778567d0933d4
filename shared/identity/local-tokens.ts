import { randomBytes, sign } from 'node:crypto'
import type { Authority } from './local-authority.js'

/** Role tokens and JWT access tokens signed by the local authority (the `local` provider). */
export interface RoleToken {
  token: string
  expiryTime: number
}

export interface AccessToken {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  scope: string
}

export function issueRoleToken(
  ca: Authority,
  principal: string,
  domain: string,
  roles: string[],
  ttlSec: number,
): RoleToken {
  const now = Math.floor(Date.now() / 1000)
  const expiryTime = now + ttlSec
  const unsigned = [
    'v=Z1',
    `d=${domain}`,
    `r=${roles.join(',')}`,
    `p=${principal}`,
    `a=${randomBytes(8).toString('hex')}`,
    `t=${now}`,
    `e=${expiryTime}`,
    'k=local',
  ].join(';')
  const s = sign('sha256', Buffer.from(unsigned), ca.key).toString('base64url')
  return { token: `${unsigned};s=${s}`, expiryTime }
}

export function issueAccessToken(
  ca: Authority,
  principal: string,
  domain: string,
  roles: string[],
  ttlSec: number,
): AccessToken {
  const now = Math.floor(Date.now() / 1000)
  const scope = roles.length ? roles.map((r) => `${domain}:role.${r}`).join(' ') : `${domain}:domain`
  const header = { alg: 'RS256', typ: 'at+jwt', kid: 'local' }
  const claims = {
    iss: 'sia-supervisor-local',
    sub: principal,
    aud: domain,
    scope,
    iat: now,
    exp: now + ttlSec,
  }
  const enc = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url')
  const unsigned = `${enc(header)}.${enc(claims)}`
  const sig = sign('sha256', Buffer.from(unsigned), ca.key).toString('base64url')
  return { access_token: `${unsigned}.${sig}`, token_type: 'Bearer', expires_in: ttlSec, scope }
}
