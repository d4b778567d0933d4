import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Redis } from 'ioredis'
import { eventually } from './support/eventually.js'
import { alert, gatewayEnv, metric, post, readJsonLines, webhook } from './support/gateway.js'
import { type RedisServer, startRedis } from './support/redis.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

/** Waits until the gateway reports `n` requests in flight (they are stalled in Redis). */
async function inflight(sc: Sidecar, n: number): Promise<void> {
  const url = `${await sc.url('metrics')}/metrics`
  await eventually(async () => {
    const v = metric(await (await fetch(url)).text(), 'gateway_inflight_requests', { service: 'gateway' })
    return v === n ? v : undefined
  })
}

function refused(base: string): Promise<boolean> {
  const { port } = new URL(base)
  return new Promise((resolve) => {
    const s = connect(Number(port), '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
  })
}

describe('gateway graceful shutdown', () => {
  let redis: RedisServer
  let admin: Redis

  before(async () => {
    redis = await startRedis()
    admin = new Redis(redis.url)
  })
  after(async () => {
    admin.disconnect()
    await redis.stop()
  })

  // Scripts stall while clients are paused for writes: requests stay in flight, mid-dedup.
  const pause = () => admin.call('CLIENT', 'PAUSE', '20000', 'WRITE')
  const unpause = () => admin.call('CLIENT', 'UNPAUSE')

  test('zero drop: 50 requests in flight at SIGTERM all get 2xx and are all in the sink, exit 0', async () => {
    const sc = await startReady({
      env: gatewayEnv({ REDIS_URL: redis.url, GATEWAY_DEDUP_TIMEOUT: '30s', SHUTDOWN_DELAY: '300ms' }),
    })
    try {
      const base = await sc.url('gateway')
      await pause()
      const requests = Array.from({ length: 50 }, (_, i) =>
        post(base, webhook([alert(`ZeroDrop${i}`)])).then(
          (r) => r.status,
          (err: Error) => err.message,
        ),
      )
      await inflight(sc, 50)
      sc.kill('SIGTERM')

      // Readiness drops first, while the gateway still listens; then the listener closes.
      await eventually(async () => ((await fetch(`${base}/ready`)).status === 503 ? true : undefined))
      await sc.waitForEvent('service.shutdown.begin', { service: 'gateway' })
      await eventually(async () => ((await refused(base)) ? true : undefined))
      assert.equal(sc.proc.exitCode, null, 'still draining')

      await unpause()
      const statuses = await Promise.all(requests)
      assert.deepEqual(statuses, Array(50).fill(201))
      assert.equal((await sc.exited).code, 0)
      const names = readJsonLines(join(sc.dataDir, 'alerts.jsonl')).map((l) => l.alertname)
      assert.deepEqual(new Set(names), new Set(Array.from({ length: 50 }, (_, i) => `ZeroDrop${i}`)))
      assert.equal(names.length, 50)
      assert.equal(sc.events('gateway.redis.closed').length, 1, 'Redis closed with QUIT after the drain')
    } finally {
      await unpause()
      await stop(sc)
    }
  })

  test('a request that outlives SHUTDOWN_TIMEOUT is cut and the exit code is 1', async () => {
    const sc = await startReady({
      env: gatewayEnv({ REDIS_URL: redis.url, GATEWAY_DEDUP_TIMEOUT: '30s', SHUTDOWN_TIMEOUT: '1s' }),
    })
    try {
      const base = await sc.url('gateway')
      await pause()
      const request = post(base, webhook([alert('TooSlow')])).then(
        (r) => r.status,
        () => 'cut',
      )
      await inflight(sc, 1)
      const t0 = Date.now()
      sc.kill('SIGTERM')
      assert.equal((await sc.exited).code, 1)
      // Redis stays paused for 20s; the process is out within SHUTDOWN_TIMEOUT plus one second.
      assert.ok(Date.now() - t0 < 1000 + 1000, `exited after ${Date.now() - t0}ms`)
      assert.equal(await request, 'cut')
      assert.equal(sc.events('service.shutdown.timeout').filter((r) => r.service === 'gateway').length, 1)
    } finally {
      await unpause()
      await stop(sc)
    }
  })

  test('Redis gone before shutdown: the close error is logged and the exit code stays 0', async () => {
    const own = await startRedis()
    const sc = await startReady({ env: gatewayEnv({ REDIS_URL: own.url }) })
    try {
      assert.equal((await post(await sc.url('gateway'), webhook([alert('BeforeKill')]))).status, 201)
      await own.stop()
      await sc.waitForEvent('gateway.redis.down')
      assert.equal(await stop(sc), 0)
      const failed = sc.events('gateway.redis.close.failed')
      assert.equal(failed.length, 1)
      assert.equal(failed[0]!.level, 'error')
    } finally {
      await stop(sc)
      await own.stop()
    }
  })
})
