import { codedError } from '../errors.js'
import { stat } from '../fs-async.js'
import { type Authority, authorityPaths, loadOrCreateAuthority } from './local-authority.js'
import { issueAccessToken, issueRoleToken, jwks } from './local-tokens.js'
import type { TokenSource } from './tokens.js'

const DEFAULT_TTL_SEC = 3600
/**
 * The longest token the local authority issues on request: 24 hours, or TOKEN_EXPIRY when that is
 * longer. A request for more (`expiry`, `max_expiry`, `min_expiry`; even 1e300) gets this.
 */
export const MAX_REQUESTED_TTL_SEC = 24 * 3600

export interface LocalTokenSourceOptions {
  dataDir: string
  /** `<domain>.<service>` of this workload. */
  principal: string
  /** TOKEN_EXPIRY in seconds; 0: one hour. */
  defaultExpirySec: number
}

/** Tokens signed by the embedded authority (DESIGN.md §6 `local`). */
export function createLocalTokenSource(opts: LocalTokenSourceOptions): TokenSource {
  // Loaded again only when its certificate file is another (the authority deleted, set aside
  // as broken, or replaced, and made anew by the certificate service): kept for the worker's life,
  // tokens went on being signed, and the JWKS published, with a key that was no longer the CA's.
  // Retried after a failure.
  const { cert } = authorityPaths(opts.dataDir)
  let loaded: { stamp: string; authority: Promise<Authority> } | undefined
  // The certificate of the authority that signed last: one loaded since that is another is said.
  let signedWith: string | undefined
  const listeners: (() => void)[] = []
  const authority = async () => {
    const st = await stat(cert).catch(() => undefined)
    const stamp = st ? `${st.dev}:${st.ino}:${st.mtimeMs}:${st.size}` : ''
    if (loaded?.stamp !== stamp) {
      const next = { stamp, authority: loadOrCreateAuthority(opts.dataDir) }
      loaded = next
      next.authority.then(
        (a) => {
          const changed = signedWith !== undefined && signedWith !== a.certPem
          signedWith = a.certPem
          if (changed) for (const listener of listeners) listener()
        },
        () => {
          if (loaded === next) loaded = undefined
        },
      )
    }
    return loaded.authority.catch((err: unknown) => {
      throw codedError('ERR_UPSTREAM', 'local authority unavailable', err)
    })
  }
  const fallback = opts.defaultExpirySec || DEFAULT_TTL_SEC
  const cap = (sec: number) => Math.min(sec, Math.max(fallback, MAX_REQUESTED_TTL_SEC))
  return {
    async roleToken(req) {
      // As ZTS's determineTokenTimeout: the most asked for first, else at least the least asked for.
      const ttl = cap(req.maxExpiry > 0 ? req.maxExpiry : Math.max(fallback, req.minExpiry))
      return issueRoleToken(await authority(), opts.principal, req, ttl)
    },
    async accessToken(req) {
      return issueAccessToken(await authority(), opts.principal, req, cap(req.expiry || fallback))
    },
    async jwks() {
      return jwks(await authority())
    },
    onSignerChange(listener) {
      listeners.push(listener)
    },
  }
}
