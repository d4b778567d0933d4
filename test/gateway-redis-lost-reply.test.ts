import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Cluster } from 'ioredis'
import { alert, gatewayEnv, post, readJsonLines, webhook } from './support/gateway.js'
import { type RedisServer, startRedis } from './support/redis.js'
import { proxyCluster, type RedisGroup, startCluster } from './support/redis-ha.js'
import { type RedisProxy, startRedisProxy } from './support/redis-proxy.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

// A reply lost with its connection (a reset between the gateway and Redis, a failover) after the
// command ran: sent again after the reconnect, a check-and-lease would find the request's own lease
// and answer "duplicate", and the gateway would answer 2xx for an alert it never stored; an XADD
// would append the batch twice.

const LEASE = { GATEWAY_DEDUP_TIMEOUT: '1s', GATEWAY_DEDUP_LEASE: '2s' }

/** One alert's webhook; its answer. */
const send = (base: string, fingerprint: string) => post(base, webhook([alert('LostReply', { fingerprint })]))

/**
 * AlertManager retries a webhook that got no 2xx: while the lost call's lease lives, the alert is
 * someone's to write (no 2xx); once it is released or expires, the retry is new and stored.
 */
async function retryUntilCreated(base: string, fingerprint: string): Promise<void> {
  let retry = await send(base, fingerprint)
  for (let i = 0; retry.status !== 201 && i < 100; i++) {
    assert.ok(retry.status >= 500, `retry answered ${retry.status}: ${JSON.stringify(retry.body)}`)
    await new Promise((r) => setTimeout(r, 100))
    retry = await send(base, fingerprint)
  }
  assert.equal(retry.status, 201)
}

describe('standalone', () => {
  let redis: RedisServer
  let proxy: RedisProxy
  let sc: Sidecar

  before(async () => {
    redis = await startRedis()
    proxy = await startRedisProxy(redis.port)
    sc = await startReady({ env: gatewayEnv({ REDIS_URL: `redis://127.0.0.1:${proxy.port}`, ...LEASE }) })
  })
  after(async () => {
    try {
      assert.equal(await stop(sc), 0)
    } finally {
      await proxy.close()
      await redis.stop()
    }
  })

  test('a check-and-lease whose reply is lost is not replayed: 503, then the retry stores the alert', async () => {
    const base = await sc.url('gateway')
    const lost = proxy.loseNextReply('sia:gateway:dedup:lost-reply')
    const first = await send(base, 'lost-reply')
    await lost
    assert.equal(first.status, 503, `no 2xx for an alert that was not stored: ${JSON.stringify(first.body)}`)
    const file = join(sc.dataDir, 'alerts.jsonl')
    const stored = () => readJsonLines(file).filter((r) => r.fingerprint === 'lost-reply')
    assert.equal(stored().length, 0)

    await retryUntilCreated(base, 'lost-reply')
    assert.equal(stored().length, 1)
  })
})

// ioredis's Cluster sends a command again when its node's connection closes before the reply
// ("Connection is closed.", after retryDelayOnFailover), whatever the node's own options say.
// Every node announces its proxy's port, so the gateway's data connections go through the traps.
describe('Cluster', () => {
  const password = 'cluster-pw-lost'
  const stream = 'alerts'
  let cluster: RedisGroup | undefined
  let proxies: RedisProxy[] = []
  let reader: Cluster | undefined
  let sc: Sidecar | undefined

  before(async () => {
    cluster = await startCluster({ size: 3, password })
    proxies = await proxyCluster(cluster)
    sc = await startReady({
      env: gatewayEnv({
        REDIS_URL: `redis+cluster://:${password}@127.0.0.1:${proxies[0]!.port}`,
        GATEWAY_SINK: 'redis-stream',
        GATEWAY_STREAM_KEY: stream,
        ...LEASE,
      }),
    })
    reader = new Cluster([{ host: '127.0.0.1', port: cluster.ports[0]! }], { redisOptions: { password } })
  })
  after(async () => {
    try {
      reader?.disconnect()
      if (sc) assert.equal(await stop(sc), 0)
    } finally {
      await Promise.all(proxies.map((p) => p.close()))
      await cluster?.stop()
    }
  })

  /** The stream's entries of `fingerprint`. */
  const streamed = async (fingerprint: string) =>
    (await reader!.xrange(stream, '-', '+')).filter(
      ([, f]) => f[f.indexOf('fingerprint') + 1] === fingerprint,
    ).length
  /** The next command holding `marker` runs on its node, and its reply is lost with the connection. */
  const loseNextReply = (marker: string) => Promise.race(proxies.map((p) => p.loseNextReply(marker)))

  test('a check-and-lease whose reply is lost is not sent again: 503, then the retry stores the alert once', async () => {
    const base = await sc!.url('gateway')
    const lost = loseNextReply('sia:gateway:dedup:cl-lost-lease')
    const first = await send(base, 'cl-lost-lease')
    await lost
    assert.equal(first.status, 503, `no 2xx for an alert that was not stored: ${JSON.stringify(first.body)}`)
    assert.equal(await streamed('cl-lost-lease'), 0)

    await retryUntilCreated(base, 'cl-lost-lease')
    assert.equal(await streamed('cl-lost-lease'), 1)
  })

  test('an XADD whose reply is lost is not sent again: 503, the batch appended once, then again by the retry', async () => {
    const base = await sc!.url('gateway')
    // The record's JSON: only the XADD carries it (the dedup key and the stream key are elsewhere too).
    const lost = loseNextReply('"fingerprint":"cl-lost-xadd"')
    const first = await send(base, 'cl-lost-xadd')
    await lost
    assert.equal(first.status, 503, `the sink's write failed: ${JSON.stringify(first.body)}`)
    assert.equal(await streamed('cl-lost-xadd'), 1, 'the lost XADD ran once')

    // At least once: the retry, which got no 2xx, is new and appended again.
    await retryUntilCreated(base, 'cl-lost-xadd')
    assert.equal(await streamed('cl-lost-xadd'), 2)
  })
})
