import type { CacheKey } from './cache.js'

/**
 * The cache keys of requests and targets, as SIA makes them: TOKEN_EXPIRY (in seconds, 0 for
 * ZTS's default) is the least lifetime a role token is asked for and the lifetime an access
 * token is asked for, unless the request names its own. So a request that names none shares its
 * key, and its token, with the target of the same domain and role.
 */
export function roleTokenKey(
  domain: string,
  role: string,
  proxyForPrincipal: string,
  minExpiry: number,
  maxExpiry: number,
  defaultSec: number,
): CacheKey {
  return { domain, role, proxyForPrincipal, minExpiry: minExpiry || defaultSec, maxExpiry }
}

export function accessTokenKey(
  domain: string,
  role: string,
  proxyForPrincipal: string,
  expiry: number,
  defaultSec: number,
): CacheKey {
  return { domain, role, proxyForPrincipal, minExpiry: 0, maxExpiry: expiry || defaultSec }
}
