/**
 * When each access token this worker fetched expires (epoch ms). ZTS answers a lifetime
 * (`expires_in`), not an instant: it is counted from when the fetch was asked for.
 */
const expiries = new WeakMap<object, number>()

export function stampExpiry<T extends { expires_in: number }>(token: T, now = Date.now()): T {
  expiries.set(token, now + token.expires_in * 1000)
  return token
}

/** Epoch ms at which a stamped token expires. */
export function expiryOf(token: { expires_in: number }): number {
  return expiries.get(token) ?? Date.now() + token.expires_in * 1000
}

/**
 * What is left of a stamped token's lifetime, in whole seconds (cut, as SIA's): a cached token
 * served a while after its fetch must not tell its client the lifetime it had when fetched (an
 * OAuth2 client caches it that long). Undefined for a token that carries no lifetime.
 */
export function secondsLeft(token: object, now = Date.now()): number | undefined {
  const at = expiries.get(token)
  return at === undefined ? undefined : Math.max(0, Math.floor((at - now) / 1000))
}
