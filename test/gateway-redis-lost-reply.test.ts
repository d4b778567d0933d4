import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { alert, gatewayEnv, post, readJsonLines, webhook } from './support/gateway.js'
import { type RedisServer, startRedis } from './support/redis.js'
import { type RedisProxy, startRedisProxy } from './support/redis-proxy.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

// A reply lost with its connection (a reset between the gateway and Redis, a failover) after the
// check-and-lease ran: sent again after the reconnect, the script would find the request's own
// lease and answer "duplicate", and the gateway would answer 2xx for an alert it never stored.

let redis: RedisServer
let proxy: RedisProxy
let sc: Sidecar

before(async () => {
  redis = await startRedis()
  proxy = await startRedisProxy(redis.port)
  sc = await startReady({
    env: gatewayEnv({
      REDIS_URL: `redis://127.0.0.1:${proxy.port}`,
      GATEWAY_DEDUP_TIMEOUT: '1s',
      GATEWAY_DEDUP_LEASE: '2s',
    }),
  })
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
  const first = await post(base, webhook([alert('LostReply', { fingerprint: 'lost-reply' })]))
  await lost
  assert.equal(first.status, 503, `no 2xx for an alert that was not stored: ${JSON.stringify(first.body)}`)
  const file = join(sc.dataDir, 'alerts.jsonl')
  const stored = () => readJsonLines(file).filter((r) => r.fingerprint === 'lost-reply')
  assert.equal(stored().length, 0)

  // AlertManager retries: while the lost call's lease lives, the alert is someone's to write (no
  // 2xx); once it expires, the retry is new and stored, exactly once.
  let retry = await post(base, webhook([alert('LostReply', { fingerprint: 'lost-reply' })]))
  for (let i = 0; retry.status !== 201 && i < 50; i++) {
    assert.ok(retry.status >= 500, `retry answered ${retry.status}: ${JSON.stringify(retry.body)}`)
    await new Promise((r) => setTimeout(r, 100))
    retry = await post(base, webhook([alert('LostReply', { fingerprint: 'lost-reply' })]))
  }
  assert.equal(retry.status, 201)
  assert.equal(stored().length, 1)
})
