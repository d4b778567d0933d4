import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { createMemoryStore } from '../workers/gateway/dedup-memory.js'
import { createRedisStore, DEDUP_KEY_PREFIX } from '../workers/gateway/dedup-redis.js'
import type { DedupStore } from '../workers/gateway/dedup-store.js'
import { eventually } from './support/eventually.js'
import { alert, gatewayEnv, metric, post, readJsonLines, redisOnPort, webhook } from './support/gateway.js'
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

  const stores: [string, () => Promise<DedupStore>][] = [
    ['memory', async () => createMemoryStore(TTL)],
    [
      'redis',
      async () => {
        const c = client()
        await c.ping()
        return createRedisStore(c, TTL)
      },
    ],
  ]
  for (const [kind, make] of stores) {
    test(`${kind}: new, then duplicates with count, first-seen and last-seen`, async () => {
      const store = await make()
      const fp = `${kind}-count`
      const [a] = await store.record([{ fingerprint: fp, status: 'firing' }], 'r1', 1000)
      assert.deepEqual(a, { isNew: true, count: 1, firstSeen: 1000, lastSeen: 1000 })
      const [b, c] = await store.record(
        [
          { fingerprint: fp, status: 'firing' },
          { fingerprint: fp, status: 'firing' },
        ],
        'r2',
        2500,
      )
      assert.deepEqual(b, { isNew: false, count: 2, firstSeen: 1000, lastSeen: 2500 })
      assert.deepEqual(c, { isNew: false, count: 3, firstSeen: 1000, lastSeen: 2500 })
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
      assert.deepEqual(
        results.map((r) => r.isNew),
        [true, true, false, true],
      )
    })

    test(`${kind}: rollback forgets only what that request created`, async () => {
      const store = await make()
      const fp = `${kind}-rollback`
      await store.record([{ fingerprint: fp, status: 'firing' }], 'owner', 1000)
      await store.rollback([fp], 'someone-else')
      assert.equal((await store.record([{ fingerprint: fp, status: 'firing' }], 'r2', 1001))[0]!.isNew, false)
      await store.rollback([fp], 'owner')
      assert.equal((await store.record([{ fingerprint: fp, status: 'firing' }], 'r3', 1002))[0]!.isNew, true)
    })
  }

  test('memory: the TTL slides with every arrival and then expires', async () => {
    const store = createMemoryStore(1000)
    const rec = async (now: number) =>
      (await store.record([{ fingerprint: 'm', status: 'firing' }], 'x', now))[0]!
    assert.equal((await rec(0)).isNew, true)
    assert.equal((await rec(900)).isNew, false)
    assert.equal((await rec(1800)).isNew, false, 'still a duplicate: the TTL slid at 900')
    assert.equal((await rec(2800)).isNew, true, '1000ms after the last arrival it is new again')
  })

  test('redis: the TTL slides with every arrival and then expires', async () => {
    const c = client()
    await c.ping()
    const store = createRedisStore(c, TTL)
    const key = `${DEDUP_KEY_PREFIX}redis-ttl`
    const rec = async () =>
      (await store.record([{ fingerprint: 'redis-ttl', status: 'firing' }], 'x', Date.now()))[0]!
    assert.equal((await rec()).isNew, true)
    const pttl = await c.pttl(key)
    assert.ok(pttl > TTL - 5000 && pttl <= TTL, `pttl ${pttl}`)
    await c.pexpire(key, 5000)
    assert.equal((await rec()).isNew, false)
    assert.ok((await c.pttl(key)) > 5000, 'a duplicate extends the TTL')
    await c.pexpire(key, 1)
    await sleep(20)
    assert.equal((await rec()).isNew, true, 'expired: new again')
  })

  test('redis: two gateways racing on the same fingerprints, exactly one gets "new"', async () => {
    const [c1, c2] = [client(), client()]
    await Promise.all([c1.ping(), c2.ping()])
    const [s1, s2] = [createRedisStore(c1, TTL), createRedisStore(c2, TTL)]
    const entries = Array.from({ length: 200 }, (_, i) => ({
      fingerprint: `race-${i}`,
      status: 'firing' as const,
    }))
    for (let round = 0; round < 5; round++) {
      const batch = entries.map((e) => ({ ...e, fingerprint: `${e.fingerprint}-${round}` }))
      const [r1, r2] = await Promise.all([
        s1.record(batch, 'a', Date.now()),
        s2.record([...batch].reverse(), 'b', Date.now()),
      ])
      const news = new Map<string, number>()
      for (const [i, r] of r1.entries()) if (r.isNew) news.set(batch[i]!.fingerprint, 1)
      for (const [i, r] of r2.entries()) {
        const fp = batch[batch.length - 1 - i]!.fingerprint
        if (r.isNew) news.set(fp, (news.get(fp) ?? 0) + 1)
      }
      assert.equal(news.size, batch.length, 'every fingerprint was new for someone')
      assert.ok(
        [...news.values()].every((n) => n === 1),
        'and for exactly one of them',
      )
    }
  })

  test('redis: unreachable store fails with ERR_DEDUP_UNAVAILABLE', async () => {
    const c = new Redis(1, '127.0.0.1', {
      lazyConnect: true,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    })
    c.on('error', () => {})
    const store = createRedisStore(c, TTL)
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

    const back = await redisOnPort(port)
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
    const redis = await redisOnPort(port)
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
