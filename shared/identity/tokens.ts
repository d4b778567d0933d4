/**
 * Token requests and responses as the SIA token server API names them, and the `TokenSource`
 * every provider implements (local authority, Athenz ZTS).
 */
export interface RoleTokenRequest {
  domain: string
  /** Comma-separated roles; empty: every role of the principal in the domain. */
  role: string
  proxyForPrincipal: string
  /** Seconds; 0: the provider's default. */
  minExpiry: number
  maxExpiry: number
}

export interface AccessTokenRequest {
  domain: string
  role: string
  proxyForPrincipal: string
  /** Seconds; 0: the provider's default. */
  expiry: number
}

/** Body of POST /roletoken, as ZTS returns it. */
export interface RoleToken {
  token: string
  /** Epoch seconds. */
  expiryTime: number
}

/** Body of POST /accesstoken, as ZTS /oauth2/token returns it. */
export interface AccessToken {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  scope?: string
}

export interface TokenSource {
  roleToken(req: RoleTokenRequest, signal: AbortSignal): Promise<RoleToken>
  accessToken(req: AccessTokenRequest, signal: AbortSignal): Promise<AccessToken>
  /** The JWKS that verifies access tokens, when this source can serve it. */
  jwks?(): Promise<{ keys: Record<string, unknown>[] }>
  /**
   * Calls `listener` each time the key that signs is another (the local authority made anew):
   * tokens signed before verify against no key of the JWKS any more.
   */
  onSignerChange?(listener: () => void): void
}

/** A failure of the provider (ZTS down, signing failed): the token server answers 502. */
export function isUpstreamError(err: unknown): boolean {
  return (err as { code?: string }).code === 'ERR_UPSTREAM'
}

/**
 * ZTS's status when it refused what the client asked (a domain or role it does not have, a
 * principal not in the role, a bad request): the client's to fix, not a failure of the provider.
 * Its 401 (our certificate refused) and 429 are ours, and stay failures; so is a 4xx that is not
 * ZTS's own error (`fromZts`: a proxy's page).
 */
export function refusedByProvider(err: unknown): 400 | 403 | 404 | undefined {
  const { status, fromZts } = err as { status?: unknown; fromZts?: unknown }
  const refusal = status === 400 || status === 403 || status === 404
  return isUpstreamError(err) && fromZts === true && refusal ? status : undefined
}
