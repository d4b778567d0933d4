import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { loadConfig } from '../shared/config/load.js'
import { createLogger } from '../shared/logger.js'
import { createMemoryStore } from '../workers/gateway/dedup-memory.js'
import { createRedisStore, DEDUP_KEY_PREFIX } from '../workers/gateway/dedup-redis.js'
import type { DedupStore } from '../workers/gateway/dedup-store.js'
import { createSinkFor } from '../workers/gateway/sinks.js'
import { eventually } from './support/eventually.js'
import { alert, gatewayEnv, metric, post, readJsonLines, webhook } from './support/gateway.js'
import { freePort } from './support/ports.js'
import { type RedisServer, startRedis } from './support/redis.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

const TTL = 60_000

describe('dedup store semantics (memory and a real Redis)', () => {
  let redis: RedisServer
  const clients: Redis[] = []
  const client = () => {
    const c = new Redis(redis.url, { maxRetriesPerRequest: 1 })
    clients.push(c)
    return c
  }
  before(async () => {
    redis = await startRedis()
  })
  after(async () => {
    for (const c of clients) c.disconnect()
    await redis.stop()
  })

  const LEASE = 150
  const stores: [string, (leaseMs?: number) => Promise<DedupStore>][] = [
    ['memory', async (leaseMs = TTL) => createMemoryStore({ ttlMs: TTL, leaseMs, maxEntries: 0 })],
    [
      'redis',
      async (leaseMs = TTL) => {
        const c = client()
        await c.ping()
        return createRedisStore(c, TTL, leaseMs)
      },
    ],
    [
      // The scripts a cluster runs, one key a call (a script's keys must share a hash slot).
      'redis, one key a call',
      async (leaseMs = TTL) => {
        const c = client()
        await c.ping()
        Object.defineProperty(c, 'isCluster', { value: true })
        return createRedisStore(c, TTL, leaseMs)
      },
    ],
  ]
  const firing = (fingerprint: string) => ({ fingerprint, status: 'firing' as const })
  const states = (rs: { state: string }[]) => rs.map((r) => r.state)

  for (const [kind, make] of stores) {
    // The memory store is driven by the `now` it is given; Redis expires leases by its own clock.
    const later = async (ms: number, now: number) => {
      if (kind.startsWith('redis')) await sleep(ms)
      return now + ms
    }

    test(`${kind}: new, committed, then duplicates with count, first-seen and last-seen`, async () => {
      const store = await make()
      const fp = `${kind}-count`
      const [a] = await store.record([firing(fp)], 'r1', 1000)
      assert.deepEqual(a, { state: 'new', count: 1, firstSeen: 1000, lastSeen: 1000 })
      assert.deepEqual(await store.commit([firing(fp)], 'r1', 1001), [])
      const [b, c] = await store.record([firing(fp), firing(fp)], 'r2', 2500)
      assert.deepEqual(b, { state: 'duplicate', count: 2, firstSeen: 1000, lastSeen: 2500 })
      assert.deepEqual(c, { state: 'duplicate', count: 3, firstSeen: 1000, lastSeen: 2500 })
    })

    test(`${kind}: a status change is new (the resolution), a repeat of it is not`, async () => {
      const store = await make()
      const fp = `${kind}-status`
      const results = await store.record(
        [
          { fingerprint: fp, status: 'firing' },
          { fingerprint: fp, status: 'resolved' },
          { fingerprint: fp, status: 'resolved' },
          { fingerprint: fp, status: 'firing' },
        ],
        'r1',
        1000,
      )
      assert.deepEqual(states(results), ['new', 'new', 'duplicate', 'new'])
    })

    test(`${kind}: a live lease of another request is pending, untouched, until its commit`, async () => {
      const store = await make()
      const fp = `${kind}-lease`
      assert.deepEqual(states(await store.record([firing(fp)], 'writer', 1000)), ['new'])
      const [busy] = await store.record([firing(fp)], 'ha-peer', 1001)
      assert.equal(busy!.state, 'pending', 'a concurrent request must not write it a second time')
      assert.equal(busy!.count, 1, 'and it is not counted')
      const [resolved] = await store.record([{ fingerprint: fp, status: 'resolved' }], 'other', 1002)
      assert.equal(resolved!.state, 'pending', 'whatever the status')
      assert.deepEqual(await store.commit([firing(fp)], 'writer', 1003), [])
      assert.deepEqual(states(await store.record([firing(fp)], 'ha-peer', 1004)), ['duplicate'])
    })

    test(`${kind}: release drops only that request's pending lease, never a committed record`, async () => {
      const store = await make()
      const fp = `${kind}-release`
      await store.record([firing(fp)], 'owner', 1000)
      await store.release([fp], 'someone-else')
      assert.deepEqual(states(await store.record([firing(fp)], 'r2', 1001)), ['pending'])
      await store.release([fp], 'owner')
      assert.deepEqual(states(await store.record([firing(fp)], 'r3', 1002)), ['new'], 'the retry is new')
      await store.commit([firing(fp)], 'r3', 1003)
      await store.release([fp], 'r3')
      assert.deepEqual(states(await store.record([firing(fp)], 'r4', 1004)), ['duplicate'])
    })

    test(`${kind}: a lease whose owner died expires: the retry is new`, async () => {
      const store = await make(LEASE)
      const fp = `${kind}-dead-owner`
      let now = 1000
      assert.deepEqual(states(await store.record([firing(fp)], 'died', now)), ['new'])
      now = await later(LEASE / 3, now)
      assert.deepEqual(states(await store.record([firing(fp)], 'retry-1', now)), ['pending'])
      now = await later(LEASE + 50, now)
      assert.deepEqual(states(await store.record([firing(fp)], 'retry-2', now)), ['new'])
      // The dead owner's commit, had it come back, would not take the record from retry-2.
      assert.deepEqual(await store.commit([firing(fp)], 'died', now), [fp])
      assert.deepEqual(await store.commit([firing(fp)], 'retry-2', now), [])
      assert.deepEqual(states(await store.record([firing(fp)], 'r', now + 1)), ['duplicate'])
    })

    test(`${kind}: a commit after the lease ran out unclaimed still records the alert`, async () => {
      const store = await make(LEASE)
      const fp = `${kind}-late-commit`
      let now = 1000
      await store.record([firing(fp)], 'slow', now)
      now = await later(LEASE + 50, now)
      assert.deepEqual(await store.commit([firing(fp)], 'slow', now), [])
      assert.deepEqual(states(await store.record([firing(fp)], 'r', now + 1)), ['duplicate'])
    })
    test(`${kind}: a batch of thousands (several script calls, several slices) answers each entry in order`, async () => {
      const store = await make()
      const batch = Array.from({ length: 3000 }, (_, i) => firing(`${kind}-big-${i}`))
      // Every third one committed before, by another request: a duplicate now.
      const earlier = batch.filter((_, i) => i % 3 === 0)
      await store.record(earlier, 'before', 1000)
      assert.deepEqual(await store.commit(earlier, 'before', 1000), [])
      const results = await store.record([...batch, batch[1]!], 'big', 2000)
      assert.deepEqual(states(results), [
        ...batch.map((_, i) => (i % 3 === 0 ? 'duplicate' : 'new')),
        'duplicate',
      ])
      const fresh = batch.filter((_, i) => i % 3 !== 0)
      assert.deepEqual(await store.commit(fresh, 'big', 2001), [])
      assert.deepEqual(
        await store.commit(fresh, 'someone-else', 2002),
        fresh.map((e) => e.fingerprint),
      )
      assert.deepEqual(new Set(states(await store.record(batch, 'again', 3000))), new Set(['duplicate']))
    })
  }

  test('memory: the TTL slides with every arrival and then expires', async () => {
    const store = createMemoryStore({ ttlMs: 1000, leaseMs: 100, maxEntries: 0 })
    const rec = async (now: number) => (await store.record([firing('m')], `x${now}`, now))[0]!.state
    assert.equal(await rec(0), 'new')
    await store.commit([firing('m')], 'x0', 0)
    assert.equal(await rec(900), 'duplicate')
    assert.equal(await rec(1800), 'duplicate', 'still a duplicate: the TTL slid at 900')
    assert.equal(await rec(2800), 'new', '1000ms after the last arrival it is new again')
  })

  test('memory: GATEWAY_DEDUP_MAX_ENTRIES evicts the least recently seen first', async () => {
    const store = createMemoryStore({ ttlMs: TTL, leaseMs: TTL, maxEntries: 3 })
    for (const [i, fp] of ['a', 'b', 'c'].entries()) {
      await store.record([firing(fp)], 'w', i)
      await store.commit([firing(fp)], 'w', i)
    }
    assert.deepEqual(states(await store.record([firing('a')], 'r', 10)), ['duplicate'], 'a is seen again')
    // A fourth fingerprint: b is now the least recently seen and goes.
    assert.deepEqual(states(await store.record([firing('d')], 'w', 11)), ['new'])
    await store.commit([firing('d')], 'w', 11)
    assert.deepEqual(states(await store.record([firing('a'), firing('c'), firing('d')], 'r', 12)), [
      'duplicate',
      'duplicate',
      'duplicate',
    ])
    assert.deepEqual(states(await store.record([firing('b')], 'r', 13)), ['new'], 'b was evicted')
    await store.commit([firing('b')], 'r', 13)
    assert.deepEqual(
      states(await store.record([firing('a')], 'r2', 14)),
      ['new'],
      'taking b back (committed) evicted a, the least recently seen then',
    )
  })

  test('memory: a lease is never evicted at GATEWAY_DEDUP_MAX_ENTRIES: a repeat while it is written waits, not written twice', async () => {
    const store = createMemoryStore({ ttlMs: TTL, leaseMs: TTL, maxEntries: 2 })
    assert.deepEqual(states(await store.record([firing('writing')], 'slow', 0)), ['new'])
    for (const [i, fp] of ['b', 'c', 'd'].entries()) {
      await store.record([firing(fp)], 'w', i + 1)
      await store.commit([firing(fp)], 'w', i + 1)
    }
    assert.deepEqual(states(await store.record([firing('writing')], 'peer', 5)), ['pending'])
    assert.deepEqual(states(await store.record([firing('b')], 'r', 6)), ['new'], 'the committed ones went')
    assert.deepEqual(await store.commit([firing('writing')], 'slow', 7), [])
    assert.deepEqual(states(await store.record([firing('writing')], 'peer', 8)), ['duplicate'])
  })

  test('redis: a pending lease lives GATEWAY_DEDUP_LEASE, a committed record the sliding TTL', async () => {
    const c = client()
    await c.ping()
    const store = createRedisStore(c, TTL, 5000)
    const key = `${DEDUP_KEY_PREFIX}redis-ttl`
    const rec = async (owner: string) => (await store.record([firing('redis-ttl')], owner, Date.now()))[0]!
    assert.equal((await rec('w')).state, 'new')
    const leasePttl = await c.pttl(key)
    assert.ok(leasePttl > 4000 && leasePttl <= 5000, `lease pttl ${leasePttl}`)
    assert.equal(await c.hget(key, 'pending'), '1')
    await store.commit([firing('redis-ttl')], 'w', Date.now())
    assert.equal(await c.hget(key, 'pending'), null)
    const pttl = await c.pttl(key)
    assert.ok(pttl > TTL - 5000 && pttl <= TTL, `pttl ${pttl}`)
    await c.pexpire(key, 5000)
    assert.equal((await rec('r')).state, 'duplicate')
    assert.ok((await c.pttl(key)) > 5000, 'a duplicate extends the TTL')
    await c.pexpire(key, 1)
    await sleep(20)
    assert.equal((await rec('r2')).state, 'new', 'expired: new again')
  })

  test('redis: a record of the previous version (no pending field) counts as committed', async () => {
    const c = client()
    await c.ping()
    const store = createRedisStore(c, TTL, TTL)
    const key = `${DEDUP_KEY_PREFIX}legacy`
    await c.hset(key, 'status', 'firing', 'count', 1, 'first', 5, 'last', 5, 'id', 'old')
    assert.deepEqual(await store.record([firing('legacy')], 'r', 10), [
      { state: 'duplicate', count: 2, firstSeen: 5, lastSeen: 10 },
    ])
  })

  test("redis: one turn's requests share one script call, each with its own owner, clock and answer", async () => {
    const c = client()
    const admin = client()
    await Promise.all([c.ping(), admin.ping()])
    const store = createRedisStore(c, TTL, TTL)
    // The first call of a script on a connection is an EVAL, the later ones EVALSHA.
    const calls = async () => {
      const stats = await admin.info('commandstats')
      return [...stats.matchAll(/cmdstat_eval(?:sha)?:calls=(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0)
    }
    const before = await calls()
    const [first, second, other] = await Promise.all([
      store.record([firing('turn-a'), firing('turn-b')], 'owner-1', 100),
      store.record([firing('turn-a')], 'owner-2', 200),
      store.record([{ fingerprint: 'turn-c', status: 'resolved' }], 'owner-3', 300),
    ])
    assert.equal((await calls()) - before, 1, 'three requests, one script call')
    assert.deepEqual(states(first), ['new', 'new'])
    assert.deepEqual(
      second,
      [{ state: 'pending', count: 1, firstSeen: 100, lastSeen: 100 }],
      "the later request sees the earlier one's live lease, as if they had come one by one",
    )
    assert.deepEqual(other, [{ state: 'new', count: 1, firstSeen: 300, lastSeen: 300 }])
    assert.equal(await admin.hget(`${DEDUP_KEY_PREFIX}turn-c`, 'id'), 'owner-3')

    const committed = await Promise.all([
      store.commit([firing('turn-a'), firing('turn-b')], 'owner-1', 101),
      store.commit([firing('turn-a')], 'owner-2', 201),
    ])
    assert.deepEqual(committed, [[], ['turn-a']], "owner-2 held no lease on turn-a: it is someone else's")
    assert.equal(await admin.hget(`${DEDUP_KEY_PREFIX}turn-a`, 'pending'), null)
    assert.equal(await admin.hget(`${DEDUP_KEY_PREFIX}turn-c`, 'pending'), '1', 'not committed by others')
  })

  test('redis: two gateways racing on the same fingerprints, exactly one gets "new"', async () => {
    const [c1, c2] = [client(), client()]
    await Promise.all([c1.ping(), c2.ping()])
    const [s1, s2] = [createRedisStore(c1, TTL, TTL), createRedisStore(c2, TTL, TTL)]
    const entries = Array.from({ length: 200 }, (_, i) => firing(`race-${i}`))
    for (let round = 0; round < 5; round++) {
      const batch = entries.map((e) => ({ ...e, fingerprint: `${e.fingerprint}-${round}` }))
      const [r1, r2] = await Promise.all([
        s1.record(batch, 'a', Date.now()),
        s2.record([...batch].reverse(), 'b', Date.now()),
      ])
      const news = new Map<string, number>()
      for (const [i, r] of r1.entries()) if (r.state === 'new') news.set(batch[i]!.fingerprint, 1)
      for (const [i, r] of r2.entries()) {
        const fp = batch[batch.length - 1 - i]!.fingerprint
        if (r.state === 'new') news.set(fp, (news.get(fp) ?? 0) + 1)
        else assert.equal(r.state, 'pending', "the loser sees the winner's live lease")
      }
      assert.equal(news.size, batch.length, 'every fingerprint was new for someone')
      assert.ok(
        [...news.values()].every((n) => n === 1),
        'and for exactly one of them',
      )
    }
  })

  test('redis: a batch with a refused key in one of its script calls releases what every call leased', async () => {
    const c = client()
    const admin = client()
    await Promise.all([c.ping(), admin.ping()])
    const store = createRedisStore(c, TTL, TTL)
    const batch = Array.from({ length: 3000 }, (_, i) => firing(`parts-${i}`))
    // A key of the wrong type is refused (WRONGTYPE) in the part that holds it; that part and
    // the parts before and after it lease the rest.
    const bad = `${DEDUP_KEY_PREFIX}parts-1500`
    await admin.set(bad, 'not a hash')
    await assert.rejects(store.record(batch, 'failing', 1000), { code: 'ERR_DEDUP_KEY_REFUSED' })
    const left = await admin.keys(`${DEDUP_KEY_PREFIX}parts-*`)
    assert.deepEqual(left, [bad], 'no lease of the failed batch is left to hold its retry off')
    await admin.del(bad)
    const retry = await store.record(batch, 'retry', 2000)
    assert.deepEqual(new Set(states(retry)), new Set(['new']), 'the retry is new, every alert of it')
  })

  for (const cluster of [false, true]) {
    const kind = cluster ? 'redis, one key a call' : 'redis'
    test(`${kind}: a key someone else wrote under the prefix fails only the request whose alert it is`, async () => {
      const [c, admin] = [client(), client()]
      await Promise.all([c.ping(), admin.ping()])
      if (cluster) Object.defineProperty(c, 'isCluster', { value: true })
      const store = createRedisStore(c, TTL, TTL)
      const key = (fp: string) => `${DEDUP_KEY_PREFIX}${kind}-${fp}`.replaceAll(' ', '_')
      const fp = (name: string) => key(name).slice(DEDUP_KEY_PREFIX.length)
      await admin.set(key('poisoned'), 'someone else wrote this')
      // A hash in our shape whose count is not a number: refused when its status repeats.
      await admin.hset(key('miscounted'), { status: 'firing', count: 'n/a', first: '1', last: '1' })
      await admin.hset(key('full'), { status: 'firing', count: '9223372036854775807', first: '1', last: '1' })
      // One turn of the loop: on one Redis, the five requests share one script call.
      const [before, poisoned, miscounted, full, after] = await Promise.allSettled([
        store.record([firing(fp('a'))], 'before', 100),
        store.record([firing(fp('b')), firing(fp('poisoned')), firing(fp('c'))], 'poisoned', 200),
        store.record([firing(fp('e')), firing(fp('miscounted'))], 'miscounted', 250),
        store.record([firing(fp('full'))], 'full', 260),
        store.record([firing(fp('d'))], 'after', 300),
      ])
      assert.deepEqual(before, {
        status: 'fulfilled',
        value: [{ state: 'new', count: 1, firstSeen: 100, lastSeen: 100 }],
      })
      assert.deepEqual(after, {
        status: 'fulfilled',
        value: [{ state: 'new', count: 1, firstSeen: 300, lastSeen: 300 }],
      })
      assert.equal(poisoned.status, 'rejected')
      const { reason } = poisoned as PromiseRejectedResult
      assert.equal(reason.code, 'ERR_DEDUP_KEY_REFUSED', 'Redis is up: this is not the store failing')
      assert.match(reason.message, new RegExp(`^${key('poisoned')} is not a dedup record .*WRONGTYPE`))
      const other = (miscounted as PromiseRejectedResult).reason
      assert.equal(other?.code, 'ERR_DEDUP_KEY_REFUSED')
      assert.match(other.message, new RegExp(`^${key('miscounted')} is not a dedup record .*not an integer`))
      assert.deepEqual(
        [await admin.exists(key('b')), await admin.exists(key('c')), await admin.exists(key('e'))],
        [0, 0, 0],
        'what the failed requests leased is released, so their retries are new',
      )
      assert.equal(await admin.hget(key('miscounted'), 'count'), 'n/a', 'untouched')
      assert.equal((full as PromiseRejectedResult).reason?.code, 'ERR_DEDUP_KEY_REFUSED', 'a count at 2^63-1')
      assert.equal(
        await admin.get(key('poisoned')),
        'someone else wrote this',
        'and the other write is left alone',
      )

      // The commit: a lease overwritten by another type meanwhile is no longer ours; the others commit.
      await admin.set(key('a'), 'overwritten')
      const committed = await Promise.all([
        store.commit([firing(fp('a'))], 'before', 101),
        store.commit([firing(fp('d'))], 'after', 301),
      ])
      assert.deepEqual(committed, [[fp('a')], []])
      assert.equal(await admin.hget(key('d'), 'pending'), null, 'committed')
    })
  }

  for (const cluster of [false, true]) {
    const kind = cluster ? 'redis, one key a call' : 'redis'
    test(`${kind}: a script that fails part way (an ACL without HINCRBY) fails the store, and releases what it leased`, async () => {
      const admin = client()
      const user = `narrow-${cluster ? 'each' : 'group'}`
      await admin.call('ACL', 'SETUSER', user, 'on', 'nopass', '~*', '&*', '+@all', '-hincrby')
      const c = new Redis(redis.url, { maxRetriesPerRequest: 1, username: user })
      clients.push(c)
      await c.ping()
      if (cluster) Object.defineProperty(c, 'isCluster', { value: true })
      const store = createRedisStore(c, TTL, TTL)
      const key = (fp: string) => `${DEDUP_KEY_PREFIX}${user}-${fp}`
      const fp = (name: string) => key(name).slice(DEDUP_KEY_PREFIX.length)
      await admin.hset(key('seen'), { status: 'firing', count: '1', first: '1', last: '1', id: 'x' })
      // The new alert is leased first, then the repeat's HINCRBY is refused by the ACL.
      const failed = store.record([firing(fp('new')), firing(fp('seen'))], 'r', 100)
      await assert.rejects(failed, (err: { code?: string; message: string }) => {
        assert.equal(err.code, 'ERR_DEDUP_UNAVAILABLE', 'an ACL is the store failing, not a refused key')
        assert.match(err.message, /can't run this command/)
        return true
      })
      assert.equal(await admin.exists(key('new')), 0, 'the lease the failed call made is released')
    })
  }

  test('the redis-stream sink keeps GATEWAY_STREAM_MAXLEN entries, the newest; unset, every one', async () => {
    const log = createLogger('gateway', 'silent')
    const sinkOf = async (env: Record<string, string>) => {
      const inv = loadConfig([], { GATEWAY_SINK: 'redis-stream', REDIS_URL: redis.url, ...env })
      assert.equal(inv.kind, 'run')
      return createSinkFor(inv.config, client(), log)
    }
    const record = (i: number) => ({
      fingerprint: `trim-${i}`,
      alertname: `Trim${i}`,
      status: 'firing' as const,
      severity: null,
      namespace: null,
      labels: { alertname: `Trim${i}` },
      annotations: {},
      startsAt: null,
      endsAt: null,
      generatorURL: null,
      receiver: null,
      receivedAt: '2026-12-07T00:00:00.000Z',
      n: i,
    })
    const bounded = await sinkOf({ GATEWAY_STREAM_KEY: 'trimmed', GATEWAY_STREAM_MAXLEN: '25' })
    const unbounded = await sinkOf({ GATEWAY_STREAM_KEY: 'whole' })
    for (let batch = 0; batch < 4; batch++) {
      const records = Array.from({ length: 20 }, (_, i) => record(batch * 20 + i))
      await Promise.all([bounded.write(records), unbounded.write(records)])
    }
    const reader = client()
    assert.deepEqual([await reader.xlen('trimmed'), await reader.xlen('whole')], [25, 80])
    const kept = (await reader.xrange('trimmed', '-', '+')).map(
      ([, f]) => (JSON.parse(f[f.indexOf('alert') + 1]!) as { n: number }).n,
    )
    assert.deepEqual(
      kept,
      Array.from({ length: 25 }, (_, i) => 55 + i),
      'the oldest went',
    )
  })

  test('redis: unreachable store fails with ERR_DEDUP_UNAVAILABLE', async () => {
    const c = new Redis(1, '127.0.0.1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    })
    c.on('error', () => {})
    const store = createRedisStore(c, TTL, TTL)
    assert.equal(store.up(), false)
    await assert.rejects(store.record([{ fingerprint: 'x', status: 'firing' }], 'r', 1), {
      code: 'ERR_DEDUP_UNAVAILABLE',
    })
  })
})

describe('two gateway processes on one Redis', () => {
  let redis: RedisServer
  let port: number
  let a: Sidecar
  let b: Sidecar
  let streamReader: Redis

  before(async () => {
    redis = await startRedis()
    port = redis.port
    const common = { REDIS_URL: redis.url, GATEWAY_DEDUP_TIMEOUT: '10s' }
    ;[a, b] = await Promise.all([
      startReady({ env: gatewayEnv({ ...common, GATEWAY_MAX_INFLIGHT: '1' }) }),
      startReady({
        env: gatewayEnv({ ...common, GATEWAY_SINK: 'redis-stream', GATEWAY_STREAM_KEY: 'alerts' }),
      }),
    ])
    streamReader = new Redis(redis.url)
  })
  after(async () => {
    streamReader.disconnect()
    const codes = await Promise.all([stop(a), stop(b)])
    assert.deepEqual(codes, [0, 0])
    await redis.stop()
    assert.ok(!JSON.stringify([a.records, b.records]).includes(`:${port}`), 'no Redis URL in the logs')
    assert.deepEqual([a.stderr(), b.stderr()], ['', ''])
    assert.equal(a.events('gateway.redis.closed').length, 1, 'closed with QUIT')
  })

  const streamRecords = async () =>
    (await streamReader.xrange('alerts', '-', '+')).map(([, fields]) => {
      const alertJson = fields[fields.indexOf('alert') + 1]!
      return JSON.parse(alertJson) as Record<string, unknown>
    })

  test('a batch of 50 with 10 repeats sent to both: 40 created in all, each exactly once', async () => {
    const alerts = Array.from({ length: 50 }, (_, i) =>
      alert(`Shared${i % 40}`, { fingerprint: `sh${i % 40}` }),
    )
    const [ra, rb] = await Promise.all([
      post(await a.url('gateway'), webhook(alerts)),
      post(await b.url('gateway'), webhook(alerts)),
    ])
    assert.equal((ra.body.created as number) + (rb.body.created as number), 40)
    assert.equal((ra.body.duplicates as number) + (rb.body.duplicates as number), 60)
    const inFile = readJsonLines(join(a.dataDir, 'alerts.jsonl')).map((r) => r.fingerprint)
    const inStream = (await streamRecords()).map((r) => r.fingerprint)
    const all = [...inFile, ...inStream].sort()
    assert.equal(all.length, 40)
    assert.equal(new Set(all).size, 40)
  })

  test('the redis-stream sink: one XADD per new alert with the full record', async () => {
    const r = await post(await b.url('gateway'), webhook([alert('Streamed', { labels: { pod: 'p9' } })]))
    assert.equal(r.status, 201)
    const last = (await streamRecords()).at(-1)!
    assert.equal(last.alertname, 'Streamed')
    assert.deepEqual(last.labels, {
      alertname: 'Streamed',
      namespace: 'payments',
      severity: 'critical',
      pod: 'p9',
    })
    assert.equal(last.status, 'firing')
  })

  test('a key of another type under the prefix: 503 naming it for that webhook, the gateway stays ready', async () => {
    const base = await a.url('gateway')
    const poisoned = `${DEDUP_KEY_PREFIX}poison-fp`
    await streamReader.set(poisoned, 'someone else wrote this')
    const since = a.records.length
    const batch = webhook([
      alert('Poisoned', { fingerprint: 'poison-fp' }),
      alert('Beside', { fingerprint: 'beside-fp' }),
    ])
    const r = await post(base, batch)
    assert.equal(r.status, 503)
    assert.equal(r.headers.get('content-type'), 'application/problem+json')
    assert.match(String(r.body.detail), /refused an alert's record: its key holds someone else's value/)
    const failed = await a.waitForEvent('gateway.dedup.failed')
    assert.match(
      String((failed.err as { message: string }).message),
      new RegExp(`^${poisoned} is not a dedup record .*WRONGTYPE`),
    )
    // Redis is up: the next webhook is taken at once, and readiness never left.
    assert.equal((await post(base, webhook([alert('Fresh', { fingerprint: 'fresh-fp' })]))).status, 201)
    assert.equal((await fetch(`${base}/ready`)).status, 200)
    assert.deepEqual(
      a.records.slice(since).filter((x) => x.event === 'gateway.not-ready'),
      [],
    )
    // Its other alert's lease was released: once the key is cleared the retry stores both.
    await streamReader.del(poisoned)
    const retry = await post(base, batch)
    assert.equal(retry.status, 201)
    assert.equal(retry.body.created, 2)
  })

  test('503 + Retry-After when GATEWAY_MAX_INFLIGHT is exceeded', async () => {
    const base = await a.url('gateway')
    const metricsUrl = `${await a.url('metrics')}/metrics`
    // Scripts stall while clients are paused: the first request stays in flight.
    await streamReader.call('CLIENT', 'PAUSE', '2000', 'WRITE')
    const first = post(base, webhook([alert('Slow')]))
    await eventually(async () => {
      const v = metric(await (await fetch(metricsUrl)).text(), 'gateway_inflight_requests', {
        service: 'gateway',
      })
      return v === 1 ? v : undefined
    })
    const second = await post(base, webhook([alert('Rejected')]))
    assert.equal(second.status, 503)
    assert.equal(second.headers.get('retry-after'), '1')
    await streamReader.call('CLIENT', 'UNPAUSE')
    assert.equal((await first).status, 201)
  })

  test('Redis down: 503 + Retry-After at once; back: accepted again', async () => {
    const base = await a.url('gateway')
    await redis.stop()
    const down = await post(base, webhook([alert('WhileDown')]))
    assert.equal(down.status, 503)
    assert.equal(down.headers.get('retry-after'), '5')
    assert.equal(down.headers.get('content-type'), 'application/problem+json')
    await a.waitForEvent('gateway.redis.down')
    const metrics = await (await fetch(`${await a.url('metrics')}/metrics`)).text()
    assert.equal(metric(metrics, 'gateway_dedup_store_up', { service: 'gateway' }), 0)

    const back = await startRedis(port)
    redis = { ...redis, stop: () => back.stop() }
    const r = await eventually(async () => {
      const x = await post(base, webhook([alert('WhileDown')]))
      return x.status === 503 ? undefined : x
    })
    assert.equal(r.status, 201, 'the alert that got 503 is new once Redis is back')
  })
})

test('Redis down at start: the gateway starts, answers 503, and accepts once Redis is up', async () => {
  const port = await freePort()
  const sc = await startReady({ env: gatewayEnv({ REDIS_URL: `redis://127.0.0.1:${port}` }) })
  const late = await (async () => {
    const base = await sc.url('gateway')
    const down = await post(base, webhook([alert('Late')]))
    assert.equal(down.status, 503)
    assert.equal(down.headers.get('retry-after'), '5')
    const redis = await startRedis(port)
    try {
      const up = await eventually(async () => {
        const r = await post(base, webhook([alert('Late')]))
        return r.status === 503 ? undefined : r
      })
      assert.equal(up.status, 201)
      assert.equal(await stop(sc), 0)
    } finally {
      await stop(sc)
      await redis.stop()
    }
    return sc.records.filter((r) => r.event?.startsWith('gateway.redis')).map((r) => r.event)
  })()
  assert.deepEqual(late, ['gateway.redis.down', 'gateway.redis.up', 'gateway.redis.closed'])
})
