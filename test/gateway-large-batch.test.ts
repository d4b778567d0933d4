import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import { bigBatch, gatewayEnv, metric, post, readJsonLines } from './support/gateway.js'
import { startRedis } from './support/redis.js'
import { startReady, stop } from './support/sidecar.js'

/**
 * A large batch is parsed, fingerprinted, deduplicated and written in slices: the gateway's event
 * loop is never held long, so other requests (health probes, small webhooks) are not stuck behind
 * it. The loop's longest block is the worker's own `sia_worker_event_loop_delay_max_seconds` (the
 * longest delay since the previous scrape). On two loaded cores a wall-clock bound near the 50 ms
 * target would be flaky, so this test sends 4 MiB (GATEWAY_MAX_BODY_BYTES raised), where work done
 * in one piece holds the loop 200–350 ms and sliced work 50–90 ms, and asserts 150 ms. The 1 MiB
 * figure against the 50 ms target is in `npm run bench`.
 */

const MAX_BODY = 4 * 1024 * 1024
const BOUND_S = 0.15

test('a 4 MiB batch: every alert stored, and the loop never held for long', async (t) => {
  const redis = await startRedis()
  t.after(() => redis.stop())
  const sc = await startReady({
    env: gatewayEnv({ REDIS_URL: redis.url, GATEWAY_MAX_BODY_BYTES: String(MAX_BODY) }),
  })
  t.after(() => stop(sc, 'SIGKILL'))
  const base = await sc.url('gateway')
  const metricsUrl = `${await sc.url('metrics')}/metrics`
  const loopMax = async () =>
    metric(await (await fetch(metricsUrl)).text(), 'sia_worker_event_loop_delay_max_seconds', {
      service: 'gateway',
    })

  // Warm up first (a fresh worker compiles its code on the first batch): what is measured is the
  // work of a batch, not the JIT's.
  const warm = bigBatch(128 * 1024, 'Warm')
  assert.equal((await post(base, warm.payload)).status, 201)
  const { payload, count } = bigBatch(MAX_BODY - 1024)
  assert.ok(JSON.stringify(payload).length > MAX_BODY * 0.95)
  const maxes: number[] = []
  for (const [round, want] of [
    [1, 201],
    [2, 202],
  ] as const) {
    await loopMax() // resets it
    const r = await post(base, payload)
    assert.equal(r.status, want, `round ${round}: ${JSON.stringify(r.body).slice(0, 300)}`)
    const expected = want === 201 ? { created: count, duplicates: 0 } : { created: 0, duplicates: count }
    assert.deepEqual({ created: r.body.created, duplicates: r.body.duplicates }, expected)
    const m = await loopMax()
    assert.ok(m !== undefined, 'the gauge is exported')
    maxes.push(m)
  }
  t.diagnostic(
    `${count} alerts; loop held at most ${maxes.map((m) => `${(m * 1000).toFixed(0)}ms`).join(', ')}`,
  )
  for (const m of maxes) assert.ok(m < BOUND_S, `the gateway's loop was held ${(m * 1000).toFixed(0)}ms`)
  assert.equal(readJsonLines(join(sc.dataDir, 'alerts.jsonl')).length, warm.count + count)
  assert.equal(await stop(sc), 0)
})
