import {
  type AccessTokenRequest,
  type RoleTokenRequest,
  refusedByProvider,
  type TokenSource,
} from '../../shared/identity/tokens.js'
import { Counter, type Registry } from '../../shared/prom.js'
import type { TokenKind } from './metrics.js'

/**
 * `token_fetch_errors_total{type}`: fetches from the provider (a cache miss or a refresh) that
 * failed (ZTS down or refusing our certificate, signing failed). ZTS refusing what a client asked
 * (400, 403, 404: answered with that status) is the client's, not counted; refusing one of the
 * configured targets (TARGET_DOMAIN_ROLES: the sidecar's own token files, refreshed in the
 * background, no client to see it) is counted. A fetch aborted by the shutdown
 * is not a failure; one aborted because every caller gave up waiting is. The series of every configured type exist from the start, at 0, so an alert on
 * their increase sees the first failure.
 */
export function countFetchErrors(
  source: TokenSource,
  registry: Registry,
  types: readonly TokenKind[],
  targets: { roletoken: readonly RoleTokenRequest[]; accesstoken: readonly AccessTokenRequest[] } = {
    roletoken: [],
    accesstoken: [],
  },
): TokenSource {
  // A target is its whole request: a client's ask for its domain and role with another proxy
  // principal or lifetime is the client's own.
  const roleId = (r: RoleTokenRequest) =>
    [r.domain, r.role, r.proxyForPrincipal, r.minExpiry, r.maxExpiry].join('\n')
  const accessId = (r: AccessTokenRequest) => [r.domain, r.role, r.proxyForPrincipal, r.expiry].join('\n')
  const roleTargets = new Set(targets.roletoken.map(roleId))
  const accessTargets = new Set(targets.accesstoken.map(accessId))
  const errors = new Counter({
    name: 'token_fetch_errors_total',
    help: 'Token fetches from the provider that failed, by token type',
    labelNames: ['type'],
    registers: [registry],
  })
  for (const type of types) errors.inc({ type }, 0)
  const counted =
    <Q, R>(type: TokenKind, fn: (req: Q, signal: AbortSignal) => Promise<R>, target: (req: Q) => boolean) =>
    async (req: Q, signal: AbortSignal): Promise<R> => {
      try {
        return await fn(req, signal)
      } catch (err) {
        // The caller's signal says whether it was cancelled: a client wraps the AbortError in its
        // own error (the ZTS client's ERR_UPSTREAM), and its own deadline is a failure. So is a
        // fetch every caller gave up on (TOKEN_SERVER_TIMEOUT, the boot's deadline): ZTS answered
        // too late for anyone; a hanging ZTS was counted nowhere once such fetches were aborted.
        const clients = refusedByProvider(err) && !target(req)
        const abandoned = gaveUpAtDeadline(signal.reason)
        const cancelled = !abandoned && ((err as Error).name === 'AbortError' || signal.aborted)
        if (!cancelled && !clients) errors.inc({ type })
        throw err
      }
    }
  return {
    roleToken: counted('roletoken', source.roleToken.bind(source), (r) => roleTargets.has(roleId(r))),
    accessToken: counted('accesstoken', source.accessToken.bind(source), (r) =>
      accessTargets.has(accessId(r)),
    ),
    ...(source.jwks ? { jwks: source.jwks.bind(source) } : {}),
    ...(source.onSignerChange ? { onSignerChange: source.onSignerChange.bind(source) } : {}),
  }
}

/**
 * Whether every caller stopped waiting at its deadline (a client's TOKEN_SERVER_TIMEOUT, the boot's
 * deadline), not because the service stops (a shutdown during the boot fetch is no failure).
 */
function gaveUpAtDeadline(reason: unknown): boolean {
  const r = reason as { code?: string; cause?: { name?: string; code?: string } } | undefined
  if (r?.code !== 'ERR_TOKEN_ABANDONED') return false
  return r.cause?.name === 'TimeoutError' || r.cause?.code === 'ERR_TOKEN_DEADLINE'
}
