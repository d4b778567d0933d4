import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, it } from 'node:test'
import { codedError } from '../shared/errors.js'
import type { AccessToken } from '../shared/identity/tokens.js'
import { createLogger } from '../shared/logger.js'
import { createTokenApi } from '../workers/token/api.js'
import { type CacheKey, createTokenCache, MIN_REMAINING_MS } from '../workers/token/cache.js'

const key = (role: string, maxExpiry = 0): CacheKey => ({
  domain: 'd',
  role,
  proxyForPrincipal: '',
  minExpiry: 0,
  maxExpiry,
})

/** A cache over a counting fetch; `ttl` is what the next fetched token has left. */
function counting(opts: { ttlMs?: number; idleMs?: number; fail?: boolean } = {}) {
  let t = 1_000_000
  const state = { calls: 0, ttlMs: opts.ttlMs ?? 3600_000, fail: opts.fail ?? false }
  const cache = createTokenCache<{ v: number; exp: number }>({
    idleMs: opts.idleMs ?? 0,
    now: () => t,
    fetch: async () => {
      const n = ++state.calls
      await new Promise((r) => setImmediate(r))
      if (state.fail) throw codedError('ERR_UPSTREAM', 'down')
      return { v: n, exp: t + state.ttlMs }
    },
    expiresAt: (x) => x.exp,
    size: () => 10,
  })
  return { cache, state, advance: (ms: number) => (t += ms), now: () => t }
}

describe('token cache', () => {
  it('coalesces concurrent misses for one key into one fetch', async () => {
    const { cache, state } = counting()
    const got = await Promise.all(Array.from({ length: 20 }, () => cache.get(key('r'))))
    assert.equal(state.calls, 1)
    assert.ok(got.every((x) => x.v === 1))
    await cache.get(key('r', 60)) // another max expiry is another key
    assert.equal(state.calls, 2)
  })

  it('treats a token with less than a minute left as a miss', async () => {
    const { cache, state, advance } = counting({ ttlMs: MIN_REMAINING_MS + 5_000 })
    await cache.get(key('r'))
    await cache.get(key('r'))
    assert.equal(state.calls, 1)
    advance(6_000)
    assert.equal((await cache.get(key('r'))).v, 2)
  })

  it('refreshes every entry and keeps a valid token when the refresh fails', async () => {
    const { cache, state } = counting()
    await cache.get(key('a'))
    await cache.get(key('b'))
    assert.deepEqual(await cache.refreshAll(), { updated: 2, failed: 0 })
    assert.equal(state.calls, 4)
    state.fail = true
    assert.deepEqual(await cache.refreshAll(), { updated: 0, failed: 2 })
    assert.equal((await cache.get(key('a'))).v, 3)
  })

  it('evicts idle entries but never pinned ones', async () => {
    const { cache, advance, now } = counting({ idleMs: 10_000 })
    cache.pin(key('target'))
    await cache.get(key('target'))
    await cache.get(key('busy'))
    await cache.get(key('idle'))
    advance(8_000)
    await cache.get(key('busy'))
    advance(8_000)
    assert.equal(cache.evictIdle(now()), 1)
    assert.deepEqual(
      cache
        .entries()
        .map((e) => e.key.role)
        .sort(),
      ['busy', 'target'],
    )
  })
})

describe('token API upstream failures', () => {
  async function serve(upstream: () => Promise<AccessToken>, restApi = true) {
    const accessTokens = createTokenCache<AccessToken>({
      idleMs: 0,
      fetch: upstream,
      expiresAt: (t) => Date.now() + t.expires_in * 1000,
      size: () => 1,
    })
    const handler = createTokenApi({
      roleTokens: undefined,
      accessTokens,
      jwks: undefined,
      roleAuthHeader: 'Athenz-Role-Auth',
      restApi,
      proxyForPrincipal: true,
      timeoutMs: 200,
      log: createLogger('token', 'silent'),
    })
    const server = createServer(handler)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const post = (path: string) =>
      fetch(`${url}${path}`, { method: 'POST', body: '{"domain":"demo","role":"r"}' })
    const get = (path: string, headers: Record<string, string>) => fetch(`${url}${path}`, { headers })
    return { post, get, close: () => new Promise((r) => server.close(r)) }
  }

  it('answers 502 when the provider fails', async () => {
    const s = await serve(async () => {
      throw codedError('ERR_UPSTREAM', 'ZTS answered 500')
    })
    const res = await s.post('/accesstoken')
    assert.equal(res.status, 502)
    assert.equal(res.headers.get('content-type'), 'application/problem+json')
    assert.match(((await res.json()) as { detail: string }).detail, /ZTS answered 500/)
    await s.close()
  })

  it('answers 503 when no token arrives within TOKEN_SERVER_TIMEOUT', async () => {
    const s = await serve(() => new Promise(() => {}))
    const res = await s.post('/accesstoken')
    assert.equal(res.status, 503)
    await s.close()
  })

  it('answers 404 for a token type TOKEN_TYPE disabled', async () => {
    const s = await serve(async () => ({ access_token: 'x', token_type: 'Bearer', expires_in: 3600 }))
    assert.equal((await s.post('/roletoken')).status, 404)
    assert.equal((await s.post('/accesstoken')).status, 200)
    await s.close()
  })

  it('TOKEN_SERVER_REST_API=false: the POST API is gone, header mode stays', async () => {
    const s = await serve(async () => ({ access_token: 'x', token_type: 'Bearer', expires_in: 3600 }), false)
    assert.equal((await s.post('/accesstoken')).status, 404)
    const res = await s.get('/', { 'x-athenz-domain': 'demo', 'x-athenz-role': 'r' })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('authorization'), 'bearer x')
    await s.close()
  })
})
