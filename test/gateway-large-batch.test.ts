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
 * longest delay since the previous scrape). On two shared cores every wall-clock figure stretches
 * with the load, so the test holds the longest block as a share of the time the batch took, in the
 * best of four 4 MiB rounds (GATEWAY_MAX_BODY_BYTES raised): done in one piece, the work held the
 * loop 30–75% of that time (best round 30% or more, alone or beside another heavy test); sliced,
 * 9–19% (best round 11% or less). The 1 MiB figure against the 50 ms target is in `npm run bench`.
 */

const MAX_BODY = 4 * 1024 * 1024
/** The longest block, as a share of the time the batch took. */
const BOUND = 0.2

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
  // Three fresh batches, then the last one again (all duplicates). A batch done in one piece
  // holds the loop in every round; the scheduling noise of a loaded machine comes and goes, so the
  // best round is what is held to the bound.
  const maxes: number[] = []
  const took: number[] = []
  let stored = warm.count
  let last: Record<string, unknown> = {}
  for (const round of [1, 2, 3, 4]) {
    const batch = round < 4 ? bigBatch(MAX_BODY - 1024, `Big${round}x`) : undefined
    const payload = batch?.payload ?? last
    const count = (payload.alerts as unknown[]).length
    assert.ok(JSON.stringify(payload).length > MAX_BODY * 0.95)
    await loopMax() // resets it
    const t0 = performance.now()
    const r = await post(base, payload)
    took.push((performance.now() - t0) / 1000)
    const want = batch
      ? { status: 201, created: count, duplicates: 0 }
      : { status: 202, created: 0, duplicates: count }
    assert.deepEqual(
      { status: r.status, created: r.body.created, duplicates: r.body.duplicates },
      want,
      `round ${round}: ${JSON.stringify(r.body).slice(0, 300)}`,
    )
    const m = await loopMax()
    assert.ok(m !== undefined, 'the gauge is exported')
    maxes.push(m)
    if (batch) stored += count
    last = payload
  }
  const ratios = maxes.map((m, i) => m / took[i]!)
  const ms = (x: number) => `${(x * 1000).toFixed(0)}ms`
  t.diagnostic(
    `${(last.alerts as unknown[]).length} alerts a batch; loop held at most ${maxes.map(ms).join(', ')} of ${took.map(ms).join(', ')}`,
  )
  const best = Math.min(...ratios)
  assert.ok(
    best < BOUND,
    `in its best round the gateway's loop was held ${(best * 100).toFixed(0)}% of the time the batch took`,
  )
  assert.equal(readJsonLines(join(sc.dataDir, 'alerts.jsonl')).length, stored)
  assert.equal(await stop(sc), 0)
})
