import type { TokenSource } from './tokens.js'
import type { ZtsClient } from './zts-client.js'

/** Tokens from Athenz ZTS over mutual TLS: GET /domain/{d}/token and POST /oauth2/token. */
export function createZtsTokenSource(client: ZtsClient, defaultExpirySec: number): TokenSource {
  return {
    async roleToken(req, signal) {
      const q = new URLSearchParams()
      if (req.role) q.set('role', req.role)
      // As SIA asks: TOKEN_EXPIRY is the least lifetime wanted, not the most.
      const min = req.minExpiry || defaultExpirySec
      const max = req.maxExpiry
      if (min) q.set('minExpiryTime', String(min))
      if (max) q.set('maxExpiryTime', String(max))
      if (req.proxyForPrincipal) q.set('proxyForPrincipal', req.proxyForPrincipal)
      const qs = q.size ? `?${q}` : ''
      return client.call('GET', `/domain/${encodeURIComponent(req.domain)}/token${qs}`, undefined, signal)
    },
    async accessToken(req, signal) {
      const roles = req.role.split(',').filter(Boolean)
      const form: Record<string, string> = {
        grant_type: 'client_credentials',
        scope: roles.length ? roles.map((r) => `${req.domain}:role.${r}`).join(' ') : `${req.domain}:domain`,
      }
      const expiry = req.expiry || defaultExpirySec
      if (expiry) form.expires_in = String(expiry)
      if (req.proxyForPrincipal) form.proxy_for_principal = req.proxyForPrincipal
      return client.call('POST', '/oauth2/token', { form }, signal)
    },
  }
}
