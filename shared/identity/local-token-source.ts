import { codedError } from '../errors.js'
import { type Authority, loadOrCreateAuthority } from './local-authority.js'
import { issueAccessToken, issueRoleToken, jwks } from './local-tokens.js'
import type { TokenSource } from './tokens.js'

const DEFAULT_TTL_SEC = 3600

export interface LocalTokenSourceOptions {
  dataDir: string
  /** `<domain>.<service>` of this workload. */
  principal: string
  /** TOKEN_EXPIRY in seconds; 0: one hour. */
  defaultExpirySec: number
}

/** Tokens signed by the embedded authority (DESIGN.md §6 `local`). */
export function createLocalTokenSource(opts: LocalTokenSourceOptions): TokenSource {
  // The CA never changes once created: load it once, but retry after a failure.
  let loaded: Promise<Authority> | undefined
  const authority = () => {
    loaded ??= loadOrCreateAuthority(opts.dataDir).catch((err: unknown) => {
      loaded = undefined
      throw codedError('ERR_UPSTREAM', 'local authority unavailable', err)
    })
    return loaded
  }
  const fallback = opts.defaultExpirySec || DEFAULT_TTL_SEC
  return {
    async roleToken(req) {
      const ttl = Math.max(req.maxExpiry || fallback, req.minExpiry)
      return issueRoleToken(await authority(), opts.principal, req, ttl)
    },
    async accessToken(req) {
      return issueAccessToken(await authority(), opts.principal, req, req.expiry || fallback)
    },
    async jwks() {
      return jwks(await authority())
    },
  }
}
