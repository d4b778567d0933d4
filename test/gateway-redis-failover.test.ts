import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Redis } from 'ioredis'
import { eventually } from './support/eventually.js'
import { alert, gatewayEnv, post, webhook } from './support/gateway.js'
import { startRedis } from './support/redis.js'
import { startRedisProxy } from './support/redis-proxy.js'
import { startReady, stop } from './support/sidecar.js'

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
