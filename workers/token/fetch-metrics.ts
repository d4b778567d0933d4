import { refusedByProvider, type TokenSource } from '../../shared/identity/tokens.js'
import { Counter, type Registry } from '../../shared/prom.js'
import type { TokenKind } from './metrics.js'

/**
 * `token_fetch_errors_total{type}`: fetches from the provider (a cache miss or a refresh) that
 * failed (ZTS down or refusing our certificate, signing failed). ZTS refusing what a client asked
 * (400, 403, 404: answered with that status) is the client's, not counted; refusing one of the
 * configured targets (TARGET_DOMAIN_ROLES: the sidecar's own token files, refreshed in the
 * background, no client to see it) is counted. A fetch aborted by the shutdown
 * is not a failure. The series of every configured type exist from the start, at 0, so an alert on
 * their increase sees the first failure.
 */
export function countFetchErrors(
  source: TokenSource,
  registry: Registry,
  types: readonly TokenKind[],
  targets: readonly { domain: string; role: string }[] = [],
): TokenSource {
  const targeted = new Set(targets.map((t) => `${t.domain}\n${t.role}`))
  const errors = new Counter({
    name: 'token_fetch_errors_total',
    help: 'Token fetches from the provider that failed, by token type',
    labelNames: ['type'],
    registers: [registry],
  })
  for (const type of types) errors.inc({ type }, 0)
  const counted =
    <A extends [{ domain: string; role: string }, ...unknown[]], R>(
      type: TokenKind,
      fn: (...args: A) => Promise<R>,
    ) =>
    async (...args: A): Promise<R> => {
      try {
        return await fn(...args)
      } catch (err) {
        // The caller's signal says whether it was cancelled: a client wraps the AbortError in its
        // own error (the ZTS client's ERR_UPSTREAM), and its own deadline is a failure.
        const signal = args.find((a): a is AbortSignal => a instanceof AbortSignal)
        const clients = !targeted.has(`${args[0].domain}\n${args[0].role}`) && refusedByProvider(err)
        if ((err as Error).name !== 'AbortError' && !signal?.aborted && !clients) errors.inc({ type })
        throw err
      }
    }
  return {
    roleToken: counted('roletoken', source.roleToken.bind(source)),
    accessToken: counted('accesstoken', source.accessToken.bind(source)),
    ...(source.jwks ? { jwks: source.jwks.bind(source) } : {}),
  }
}
