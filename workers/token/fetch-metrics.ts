import { refusedByProvider, type TokenSource } from '../../shared/identity/tokens.js'
import { Counter, type Registry } from '../../shared/prom.js'
import type { TokenKind } from './metrics.js'

/**
 * `token_fetch_errors_total{type}`: fetches from the provider (a cache miss or a refresh) that
 * failed (ZTS down or refusing our certificate, signing failed); not one ZTS refused for what the
 * client asked (400, 403, 404: answered with that status). A fetch aborted by the shutdown
 * is not a failure. The series of every configured type exist from the start, at 0, so an alert on
 * their increase sees the first failure.
 */
export function countFetchErrors(
  source: TokenSource,
  registry: Registry,
  types: readonly TokenKind[],
): TokenSource {
  const errors = new Counter({
    name: 'token_fetch_errors_total',
    help: 'Token fetches from the provider that failed, by token type',
    labelNames: ['type'],
    registers: [registry],
  })
  for (const type of types) errors.inc({ type }, 0)
  const counted =
    <A extends unknown[], R>(type: TokenKind, fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await fn(...args)
      } catch (err) {
        // The caller's signal says whether it was cancelled: a client wraps the AbortError in its
        // own error (the ZTS client's ERR_UPSTREAM), and its own deadline is a failure.
        const signal = args.find((a): a is AbortSignal => a instanceof AbortSignal)
        // A request ZTS refused (no such role, not a member) is the client's, not a failure.
        if ((err as Error).name !== 'AbortError' && !signal?.aborted && !refusedByProvider(err))
          errors.inc({ type })
        throw err
      }
    }
  return {
    roleToken: counted('roletoken', source.roleToken.bind(source)),
    accessToken: counted('accesstoken', source.accessToken.bind(source)),
    ...(source.jwks ? { jwks: source.jwks.bind(source) } : {}),
  }
}
