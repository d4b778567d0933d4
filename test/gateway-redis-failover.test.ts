import assert from 'node:assert/strict'
import { describe, type TestContext, test } from 'node:test'
import { Redis } from 'ioredis'
import { eventually } from './support/eventually.js'
import { alert, gatewayEnv, post, webhook } from './support/gateway.js'
import { startRedis } from './support/redis.js'
import { startRedisProxy } from './support/redis-proxy.js'
import { startReady, stop } from './support/sidecar.js'

/** A Redis of the test's own, and a client to set it up and look inside; both gone after the test. */
async function redisWithAdmin(t: TestContext) {
  const redis = await startRedis()
  t.after(() => redis.stop())
  const admin = new Redis(redis.port, '127.0.0.1')
  t.after(() => admin.disconnect())
  return { redis, admin }
}

// Each test has its own Redis and sidecar, and waits on the gateway's probe (once a second): two at a time.
describe('Redis failing in ways other than down', { concurrency: 2 }, () => {
  test('a failover behind one address: the demoted master answers READONLY, the gateway reconnects to the new one', async (t) => {
    const [old, next] = await Promise.all([startRedis(), startRedis()])
    t.after(() => Promise.all([old.stop(), next.stop()]))
    const proxy = await startRedisProxy(old.port)
    t.after(() => proxy.close())
    const sc = await startReady({ env: gatewayEnv({ REDIS_URL: `redis://127.0.0.1:${proxy.port}` }) })
    t.after(() => stop(sc, 'SIGKILL'))
    const base = await sc.url('gateway')
    assert.equal((await post(base, webhook([alert('BeforeFailover')]))).status, 201)

    // The old master becomes a replica of the new one; the address now leads to the new master.
    const admin = new Redis(old.port, '127.0.0.1', { lazyConnect: true })
    await admin.connect()
    await admin.call('REPLICAOF', '127.0.0.1', String(next.port))
    admin.disconnect()
    proxy.retarget(next.port)

    // The connection the gateway has still reaches the replica (READONLY): it must not stay on it.
    const stored = await eventually(async () => {
      const r = await post(base, webhook([alert(`AfterFailover${Date.now()}`)]))
      return r.status === 201 ? r : undefined
    })
    assert.equal(stored.status, 201)
    assert.equal(await stop(sc), 0)
  })

  test('a Redis connection gone silent (no FIN, no reset) is replaced: 503 at first, then a new connection, ready with no traffic', async (t) => {
    const redis = await startRedis()
    t.after(() => redis.stop())
    const proxy = await startRedisProxy(redis.port)
    t.after(() => proxy.close())
    const sc = await startReady({
      env: gatewayEnv({ REDIS_URL: `redis://127.0.0.1:${proxy.port}`, GATEWAY_DEDUP_TIMEOUT: '300ms' }),
    })
    t.after(() => stop(sc, 'SIGKILL'))
    const base = await sc.url('gateway')
    const metrics = `${await sc.url('metrics')}/metrics`
    const storeUp = async () =>
      /^gateway_dedup_store_up\{[^}]*\} (\d)/m.exec(await (await fetch(metrics)).text())?.[1]
    assert.equal((await post(base, webhook([alert('BeforeSilence')]))).status, 201)

    // The node behind the address is lost without a word; a new one answers at the same address.
    proxy.freezeOpen()
    assert.equal((await post(base, webhook([alert('DuringSilence')]))).status, 503)
    const down = await sc.waitForEvent('gateway.not-ready')
    assert.equal(down.degraded, 'redis')
    assert.equal(await storeUp(), '0', 'the metric says what readiness says')

    // With no traffic, the once-a-second probe finds the silence and connects again.
    await sc.waitForEvent('gateway.redis.reconnecting', {}, 10_000)
    await sc.waitForEvent('gateway.ready-again', {}, 10_000)
    assert.equal(await storeUp(), '1')
    assert.equal((await post(base, webhook([alert('AfterSilence')]))).status, 201)
    assert.equal(await stop(sc), 0)
  })

  test("a database Redis refuses to select (past its `databases`): not ready and said so, never database 0's keys", async (t) => {
    const { redis, admin } = await redisWithAdmin(t)
    // Another tenant's record in database 0, for the fingerprint this gateway is about to receive.
    await admin.hset('sia:gateway:dedup:shared-fp', { status: 'firing', count: '7', first: '1', last: '1' })
    const sc = await startReady({ env: gatewayEnv({ REDIS_URL: `redis://127.0.0.1:${redis.port}/16` }) })
    t.after(() => stop(sc, 'SIGKILL'))
    const refused = await sc.waitForEvent('gateway.redis.select.failed')
    assert.equal(refused.level, 'error')
    assert.match(String(refused.msg), /REDIS_URL: ERR DB index is out of range/)
    const base = await sc.url('gateway')
    const answer = await post(base, webhook([alert('SharedFingerprint', { fingerprint: 'shared-fp' })]))
    assert.equal(answer.status, 503)
    assert.deepEqual((await admin.keys('*')).sort(), ['sia:gateway:dedup:shared-fp'])
    assert.equal(sc.events('gateway.redis.up').length, 0)
    assert.equal(sc.events('gateway.redis.select.failed').length, 1, 'said once, not at every try')
    assert.equal(await stop(sc), 0)
  })

  test('a Redis that refuses the commands requests run (an ACL without scripting; a stream key of another type) keeps the gateway not ready until it takes them', async (t) => {
    const { redis, admin } = await redisWithAdmin(t)
    await admin.call('ACL', 'SETUSER', 'gw', 'on', '>pw', '~*', '&*', '+@all', '-@scripting')
    const sc = await startReady({
      env: gatewayEnv({
        REDIS_URL: `redis://gw:pw@127.0.0.1:${redis.port}`,
        GATEWAY_SINK: 'redis-stream',
        LOG_LEVEL: 'debug',
      }),
    })
    t.after(() => stop(sc, 'SIGKILL'))
    const base = await sc.url('gateway')
    const stillFailing = (what: string) =>
      sc.records.filter((r) => String(r.msg) === `${what} is still failing`).length
    const notReady = async (what: string, degraded: string) => {
      const episodes = sc.events('gateway.not-ready').filter((r) => r.degraded === degraded).length
      const recoveries = sc.events('gateway.ready-again').length
      assert.equal((await post(base, webhook([alert(`Refused-${degraded}`)]))).status, 503)
      await sc.waitForCount('gateway.not-ready', episodes + 1, { degraded })
      // Two probes later, still not ready: the probe runs what requests run.
      const probes = stillFailing(what)
      await sc.waitFor(() => stillFailing(what) >= probes + 2)
      assert.equal(sc.events('gateway.ready-again').length, recoveries, `${what}: not ready again`)
      assert.equal((await fetch(`${base}/ready`)).status, 503)
      return recoveries
    }
    let recoveries = await notReady('the dedup store', 'redis')
    await admin.call('ACL', 'SETUSER', 'gw', '+@scripting')
    await sc.waitForCount('gateway.ready-again', recoveries + 1)

    await admin.set('sia:alerts', 'not a stream')
    recoveries = await notReady('the sink', 'sink')
    await admin.del('sia:alerts')
    await sc.waitForCount('gateway.ready-again', recoveries + 1)
    assert.equal((await post(base, webhook([alert('Taken')]))).status, 201)
    assert.equal(await admin.xlen('sia:alerts'), 1)
    // Least privilege without TYPE: the probe goes by the connection (ready again, not down for ever).
    await admin.call('ACL', 'SETUSER', 'gw', '-type')
    await admin.set('sia:alerts', 'not a stream')
    recoveries = sc.events('gateway.ready-again').length
    assert.equal((await post(base, webhook([alert('NoType')]))).status, 503)
    await sc.waitForCount('gateway.ready-again', recoveries + 1)
    await admin.del('sia:alerts')
    assert.equal((await post(base, webhook([alert('NoType')]))).status, 201)
    // A key the user may not touch (NOPERM for the key, not for TYPE): XADD fails too, not ready.
    await admin.call('ACL', 'SETUSER', 'gw', '+type', 'resetkeys', '~sia:gateway:*')
    recoveries = await notReady('the sink', 'sink')
    await admin.call('ACL', 'SETUSER', 'gw', '~*')
    await sc.waitForCount('gateway.ready-again', recoveries + 1)
    assert.equal(await stop(sc), 0)
  })

  test('Redis out of memory under the stream sink: what it took of a batch is not appended again, and not ready until it takes writes', async (t) => {
    const { redis, admin } = await redisWithAdmin(t)
    const sc = await startReady({
      env: gatewayEnv({
        REDIS_URL: `redis://127.0.0.1:${redis.port}`,
        GATEWAY_SINK: 'redis-stream',
        LOG_LEVEL: 'debug',
      }),
    })
    t.after(() => stop(sc, 'SIGKILL'))
    const base = await sc.url('gateway')
    assert.equal((await post(base, webhook([alert('Before')]))).status, 201)
    // Room for a few dozen of the batch's 2 KB records, no more.
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))![1])
    await admin.config('SET', 'maxmemory-policy', 'noeviction')
    await admin.config('SET', 'maxmemory', String(used + 100_000))
    const batch = webhook(
      Array.from({ length: 200 }, (_, i) =>
        alert(`Big${i}`, { annotations: { description: 'x'.repeat(2000) } }),
      ),
    )
    assert.equal((await post(base, batch)).status, 503)
    // Full for good now: at the edge, Redis takes small writes again once the batch's buffers are
    // freed, and a probe could find it so. A batch it took part of before it failed is a sink
    // down, not a slow one: not ready.
    await admin.config('SET', 'maxmemory', '1')
    await sc.waitForEvent('gateway.not-ready')
    // Two probes later, still not ready: Redis answers TYPE, not a write.
    const stillFailing = () => sc.records.filter((r) => /is still failing$/.test(String(r.msg))).length
    const probes = stillFailing()
    await sc.waitFor(() => stillFailing() >= probes + 2)
    assert.equal(sc.events('gateway.ready-again').length, 0)
    assert.equal((await fetch(`${base}/ready`)).status, 503)

    await admin.config('SET', 'maxmemory', '0')
    await sc.waitForEvent('gateway.ready-again', {}, 10_000)
    assert.equal((await post(base, batch)).status, 201)
    assert.equal(await admin.xlen('sia:alerts'), 201, 'each alert once')
    assert.equal(await stop(sc), 0)
  })
})
