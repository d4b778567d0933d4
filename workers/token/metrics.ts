import { Gauge, type Registry } from '../../shared/prom.js'
import type { TokenCache } from './cache.js'

export type TokenKind = 'roletoken' | 'accesstoken'

/** SIA's pod labels, each only when its setting (NAMESPACE, POD_NAME) is set. */
export interface PodLabels {
  k8s_namespace?: string
  k8s_pod?: string
}

/** The original's cache metrics, read from the caches at scrape time. */
export function registerTokenMetrics(
  registry: Registry,
  caches: Record<TokenKind, TokenCache<unknown>>,
  pod: PodLabels = {},
): void {
  const kinds = Object.entries(caches) as [TokenKind, TokenCache<unknown>][]
  const podNames = Object.keys(pod) as (keyof PodLabels)[]
  new Gauge({
    name: 'cached_token_bytes',
    help: 'Bytes of tokens held in the cache',
    labelNames: ['type', ...podNames],
    registers: [registry],
    collect() {
      for (const [type, cache] of kinds) this.set({ type, ...pod }, cache.stats().bytes)
    },
  })
  new Gauge({
    name: 'cached_token_entries',
    help: 'Tokens held in the cache',
    labelNames: ['type', ...podNames],
    registers: [registry],
    collect() {
      for (const [type, cache] of kinds) this.set({ type, ...pod }, cache.stats().entries)
    },
  })
  // One series per cached (domain, role), rebuilt at each scrape from what the cache holds: the
  // series of an evicted key goes with it, so the series are bounded with the cache.
  new Gauge({
    name: 'token_expires_in_seconds',
    help: 'Seconds until the cached token of this (domain, role) that expires first expires',
    labelNames: ['type', 'domain', 'role', ...podNames],
    registers: [registry],
    collect() {
      this.reset()
      const now = Date.now()
      for (const [type, cache] of kinds) {
        // Several keys may hold tokens of one (domain, role) (another lifetime, a proxy): the
        // series is the soonest to expire, not whichever entry came last.
        const soonest = new Map<string, { domain: string; role: string; at: number }>()
        for (const e of cache.entries()) {
          // One past its expiry waits for the next refresh pass to be purged; it is served to
          // no one, and its series went negative for up to TOKEN_REFRESH_INTERVAL.
          if (e.expiresAt <= now) continue
          const id = `${e.key.domain}\n${e.key.role}`
          const seen = soonest.get(id)
          if (!seen || e.expiresAt < seen.at)
            soonest.set(id, { domain: e.key.domain, role: e.key.role, at: e.expiresAt })
        }
        for (const { domain, role, at } of soonest.values()) {
          this.set({ type, domain, role, ...pod }, Math.round((at - now) / 1000))
        }
      }
    },
  })
}
