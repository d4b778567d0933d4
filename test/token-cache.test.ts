import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, it } from 'node:test'
import { codedError } from '../shared/errors.js'
import type { AccessToken } from '../shared/identity/tokens.js'
import { createRepeatGate, REPEAT_WINDOW_MS } from '../shared/log-repeats.js'
import { createLogger } from '../shared/logger.js'
import { Registry } from '../shared/prom.js'
import { createTokenApi } from '../workers/token/api.js'
import {
  type CacheKey,
  createTokenCache,
  describeKey,
  MIN_REMAINING_MS,
  type TokenCache,
} from '../workers/token/cache.js'
import { registerTokenMetrics } from '../workers/token/metrics.js'

const key = (role: string, maxExpiry = 0): CacheKey => ({
  domain: 'd',
  role,
  proxyForPrincipal: '',
  minExpiry: 0,
  maxExpiry,
})

/** A cache over a counting fetch; `ttl` is what the next fetched token has left. */
function counting(
  opts: {
    ttlMs?: number
    idleMs?: number
    fail?: boolean
    maxEntries?: number
    maxBytes?: number
    targets?: CacheKey[]
    signal?: AbortSignal
  } = {},
) {
  let t = 1_000_000
  /** How far the wall clock has been stepped from the monotonic one. */
  let step = 0
  const state = {
    calls: 0,
    ttlMs: opts.ttlMs ?? 3600_000,
    fail: opts.fail ?? false,
    /** Resolves a held fetch (when `hold` is set, fetches wait for it). */
    hold: undefined as Promise<void> | undefined,
    signals: [] as AbortSignal[],
  }
  const cache = createTokenCache<{ v: number; exp: number }>({
    idleMs: opts.idleMs ?? 0,
    maxEntries: opts.maxEntries ?? 1000,
    maxBytes: opts.maxBytes ?? 1 << 20,
    ...(opts.targets ? { targets: opts.targets } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    now: () => t + step,
    clock: () => t,
    fetch: async (_k, signal) => {
      const n = ++state.calls
      state.signals.push(signal)
      await new Promise((r) => setImmediate(r))
      if (state.hold) await state.hold
      if (signal.aborted) throw codedError('ERR_UPSTREAM', 'aborted')
      if (state.fail) throw codedError('ERR_UPSTREAM', 'down')
      return { v: n, exp: t + step + state.ttlMs }
    },
    expiresAt: (x) => x.exp,
    size: () => 10,
  })
  return {
    cache,
    state,
    advance: (ms: number) => (t += ms),
    now: () => t + step,
    /** The wall clock stepped (an NTP step, a VM's resume); the monotonic one goes on. */
    stepWall: (ms: number) => (step += ms),
  }
}

const roles = (cache: { entries(): Iterable<{ key: CacheKey }> }) =>
  [...cache.entries()].map((e) => e.key.role).sort()

describe('token cache', () => {
  it('coalesces concurrent misses for one key into one fetch', async () => {
    const { cache, state } = counting()
    const got = await Promise.all(Array.from({ length: 20 }, () => cache.get(key('r'))))
    assert.equal(state.calls, 1)
    assert.ok(got.every((x) => x.v === 1))
    await cache.get(key('r', 60)) // another max expiry is another key
    assert.equal(state.calls, 2)
  })

  it('a fetch is aborted once every caller waiting for it has stopped waiting, and only then', async () => {
    const { cache, state } = counting()
    let release: () => void = () => {}
    state.hold = new Promise<void>((r) => {
      release = r
    })
    const [a, b] = [new AbortController(), new AbortController()]
    const first = cache.get(key('r'), a.signal)
    const second = cache.get(key('r'), b.signal)
    await new Promise((r) => setImmediate(r))
    a.abort(codedError('ERR_TOKEN_DEADLINE', 'a gave up'))
    await assert.rejects(first, { code: 'ERR_TOKEN_DEADLINE' }, 'the first stops waiting')
    assert.equal(state.signals[0]!.aborted, false, 'another caller still waits')
    b.abort(codedError('ERR_TOKEN_DEADLINE', 'b gave up'))
    await assert.rejects(second, { code: 'ERR_TOKEN_DEADLINE' })
    assert.equal(state.signals[0]!.aborted, true, 'nobody waits: the fetch is aborted')
    assert.equal((state.signals[0]!.reason as { code?: string }).code, 'ERR_TOKEN_ABANDONED')
    release()
    // A caller without a signal (a target's boot fetch may have one; a refresh shares it) keeps
    // its fetch whoever else gives up; the next miss starts a fetch of its own.
    const c = new AbortController()
    const kept = cache.get(key('s'))
    const gaveUp = cache.get(key('s'), c.signal)
    c.abort(codedError('ERR_TOKEN_DEADLINE', 'c gave up'))
    await assert.rejects(gaveUp)
    assert.equal((await kept).v, 2)
    assert.equal(state.signals[1]!.aborted, false)
    assert.equal((await cache.get(key('r'))).v, 3, 'the abandoned key is fetched anew')
  })

  it('a caller that comes while an abandoned fetch is being aborted gets a fetch of its own, not that one', async () => {
    const { cache, state } = counting()
    let release: () => void = () => {}
    state.hold = new Promise<void>((r) => {
      release = r
    })
    const gaveUp = new AbortController()
    const first = cache.get(key('r'), gaveUp.signal)
    await new Promise((r) => setImmediate(r))
    gaveUp.abort(codedError('ERR_TOKEN_DEADLINE', 'gave up'))
    await assert.rejects(first)
    // The aborted fetch has not settled yet (it is held): this caller must not join it.
    const next = cache.get(key('r'), AbortSignal.timeout(5_000))
    state.hold = undefined
    release()
    assert.equal((await next).v, 2, 'fetched anew')
  })

  it('clear() while a fetch is in flight: a caller after it fetches anew (the authority changed)', async () => {
    const { cache, state } = counting()
    let release: () => void = () => {}
    state.hold = new Promise<void>((r) => {
      release = r
    })
    const before = cache.get(key('r'))
    await new Promise((r) => setImmediate(r))
    cache.clear()
    state.hold = undefined
    const after = cache.get(key('r'))
    release()
    assert.equal((await before).v, 1, 'its callers get the fetch in flight')
    assert.equal((await after).v, 2, 'a caller after the clear does not')
  })

  it('treats a token with less than a minute left as a miss', async () => {
    const { cache, state, advance } = counting({ ttlMs: MIN_REMAINING_MS + 5_000 })
    await cache.get(key('r'))
    await cache.get(key('r'))
    assert.equal(state.calls, 1)
    advance(6_000)
    assert.equal(cache.peek(key('r')), undefined)
    assert.equal((await cache.get(key('r'))).v, 2)
  })

  it('a token is a miss once either clock says it has under a minute left: a wall clock stepped back or forward', async () => {
    const { cache, state, advance, stepWall } = counting({ ttlMs: 3600_000 })
    await cache.get(key('r'))
    stepWall(-3600_000) // an hour back: by the wall clock the token has two hours left
    advance(3600_000 - MIN_REMAINING_MS + 1)
    assert.equal(cache.peek(key('r')), undefined, 'its hour is up on the monotonic clock')
    assert.equal((await cache.get(key('r'))).v, 2)
    stepWall(3600_000) // an hour forward: by the wall clock this one has expired
    assert.equal(cache.peek(key('r')), undefined)
    assert.equal((await cache.get(key('r'))).v, 3, 'fetched anew, not the one the cache holds')
    assert.equal(cache.peek(key('r'))?.v, 3)
    assert.equal(state.calls, 3)
  })

  it("a token fetched with under a minute left goes to its callers, and is neither cached nor counted, nor takes a valid one's room", async () => {
    const { cache, state } = counting({ ttlMs: 30_000, maxEntries: 3, targets: [key('target')] })
    const [a, b] = await Promise.all([cache.get(key('short')), cache.get(key('short'))])
    assert.deepEqual([a.v, b.v, state.calls], [1, 1, 1], 'one fetch for callers at once')
    assert.deepEqual(cache.stats(), { entries: 0, bytes: 0 })
    assert.deepEqual([...cache.entries()], [])
    assert.equal(cache.peek(key('short')), undefined)
    assert.equal((await cache.get(key('short'))).v, 2)
    // Three valid tokens fill the cache. A miss in flight takes a slot, as any new key's does (the
    // least recently used goes); once it is known short, the slot is free again: the next short
    // ones evict nothing more (each stayed until purged, and took a valid token's room).
    state.ttlMs = 3600_000
    for (const r of ['a', 'b', 'c']) await cache.get(key(r))
    state.ttlMs = 30_000
    for (const r of ['s1', 's2', 's3', 's4']) await cache.get(key(r))
    assert.deepEqual(
      ['a', 'b', 'c'].map((r) => cache.peek(key(r)) !== undefined),
      [false, true, true],
    )
    assert.deepEqual(roles(cache), ['b', 'c'])
    // A target's token is its file's, however short: held (and so written).
    await cache.refresh({ usedSince: 0, fetchedBefore: 0 })
    assert.ok(roles(cache).includes('target'))
  })

  it('holds at most maxEntries, evicting the least recently used; targets are never evicted', async () => {
    const { cache, advance } = counting({ maxEntries: 3, targets: [key('target')] })
    await cache.get(key('target'))
    for (const r of ['a', 'b', 'c']) {
      await cache.get(key(r))
      advance(10)
    }
    assert.ok(cache.peek(key('a'))) // a is now the most recently used
    await cache.get(key('d')) // evicts b, the least recently used
    assert.deepEqual(roles(cache), ['a', 'c', 'd', 'target'])
    assert.deepEqual(cache.stats(), { entries: 4, bytes: 40 })
  })

  it('holds at most maxBytes (tokens and their keys)', async () => {
    const keyBytes = describeKey(key('r0')).length
    const { cache } = counting({ maxBytes: 3 * (10 + keyBytes) })
    for (let i = 0; i < 10; i++) await cache.get(key(`r${i}`))
    assert.deepEqual(roles(cache), ['r7', 'r8', 'r9'])
  })

  it('refreshes the targets and the keys used since the last refresh, not fresh or unused ones', async () => {
    const { cache, state, advance, now } = counting({ targets: [key('target')] })
    await cache.get(key('target'))
    await cache.get(key('used'))
    await cache.get(key('unused'))
    advance(10_000)
    const since = now()
    advance(1_000)
    assert.ok(cache.peek(key('used')))
    await cache.get(key('fresh')) // fetched just now: not worth fetching again
    assert.ok(cache.peek(key('fresh')))
    const version = () => Object.fromEntries([...cache.entries()].map((e) => [e.key.role, e.value.v]))
    const before = version()
    const tally = await cache.refresh({ usedSince: since, fetchedBefore: now() - 500 })
    assert.deepEqual(tally, { updated: 2, failed: 0, skipped: 2 })
    assert.equal(state.calls, 6)
    const after = version()
    for (const r of ['target', 'used']) assert.ok(after[r]! > before[r]!, `${r} re-fetched`)
    for (const r of ['unused', 'fresh']) assert.equal(after[r], before[r], `${r} left alone`)
  })

  it('serves the cached token while it is re-fetched, and keeps it when the refresh fails', async () => {
    const { cache, state, now } = counting({ targets: [key('t')] })
    const first = await cache.get(key('t'))
    let release!: () => void
    state.hold = new Promise((r) => {
      release = r
    })
    const refreshing = cache.refresh({ usedSince: now(), fetchedBefore: now() })
    await new Promise((r) => setImmediate(r))
    assert.equal(cache.peek(key('t')), first, 'no wait for the refresh')
    state.fail = true
    release()
    assert.deepEqual(await refreshing, { updated: 0, failed: 1, skipped: 0 })
    state.hold = undefined
    assert.equal(cache.peek(key('t')), first, 'the old token stays while valid')
    state.fail = false
    await cache.refresh({ usedSince: now(), fetchedBefore: now() + 1 })
    assert.notEqual(cache.peek(key('t')), first)
  })

  it('evicts idle entries but never targets', async () => {
    const { cache, advance, now } = counting({ idleMs: 10_000, targets: [key('target')] })
    await cache.get(key('target'))
    await cache.get(key('busy'))
    await cache.get(key('idle'))
    advance(8_000)
    await cache.get(key('busy'))
    advance(8_000)
    assert.equal(cache.evictIdle(now()), 1)
    assert.deepEqual(roles(cache), ['busy', 'target'])
  })

  it('a miss is not aborted by its eviction, only by the stop signal', async () => {
    const stop = new AbortController()
    const { cache, state } = counting({ maxEntries: 1, signal: stop.signal })
    let release!: () => void
    state.hold = new Promise((r) => {
      release = r
    })
    const slow = cache.get(key('slow'))
    const other = cache.get(key('other')) // evicts slow's placeholder
    release()
    assert.equal((await slow).v, 1)
    assert.equal((await other).v, 2)
    state.hold = new Promise(() => {})
    const stuck = cache.get(key('stuck'))
    await new Promise((r) => setImmediate(r))
    assert.equal(state.signals.at(-1)?.aborted, false)
    stop.abort()
    assert.equal(state.signals.at(-1)?.aborted, true)
    void stuck.catch(() => {})
  })
})

describe('token API upstream failures', () => {
  async function serve(upstream: () => Promise<AccessToken>, restApi = true) {
    const accessTokens = createTokenCache<AccessToken>({
      idleMs: 0,
      maxEntries: 100,
      maxBytes: 1 << 20,
      fetch: upstream,
      expiresAt: (t) => Date.now() + t.expires_in * 1000,
      size: () => 1,
    })
    const log = createLogger('token', 'silent')
    const { handle: handler } = createTokenApi({
      roleTokens: undefined,
      accessTokens,
      jwks: undefined,
      roleAuthHeader: 'Athenz-Role-Auth',
      defaultExpirySec: 0,
      restApi,
      proxyForPrincipal: true,
      timeoutMs: 200,
      log,
      repeats: createRepeatGate(log, REPEAT_WINDOW_MS),
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
    // As SIA: without the REST API, the request is header mode, here without its headers.
    assert.equal((await s.post('/accesstoken')).status, 400)
    const res = await s.get('/', { 'x-athenz-domain': 'demo', 'x-athenz-role': 'r' })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('authorization'), 'bearer x')
    await s.close()
  })
})

describe('token metrics', () => {
  it('a token past its expiry, not yet purged, has no token_expires_in_seconds series (it went negative)', async () => {
    const now = Date.now()
    const entry = (role: string, expiresAt: number) => ({
      key: key(role),
      value: 't',
      expiresAt,
      fetchedAt: now - 10_000,
      lastUsed: now - 10_000,
      bytes: 1,
    })
    const held = [entry('gone', now - 13_000), entry('both', now - 1_000), entry('both', now + 90_000)]
    const cache = {
      entries: () => held,
      stats: () => ({ entries: 3, bytes: 3 }),
    } as unknown as TokenCache<unknown>
    const registry = new Registry()
    registerTokenMetrics(registry, { accesstoken: cache, roletoken: cache })
    const series = (await registry.getMetricsAsJSON()).find((m) => m.name === 'token_expires_in_seconds')!
    const values = series.values.map((v) => [v.labels.type, v.labels.role, v.value])
    assert.deepEqual(values.sort(), [
      ['accesstoken', 'both', 90],
      ['roletoken', 'both', 90],
    ])
  })
})
