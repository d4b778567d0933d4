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
 * longest delay since the previous scrape). One step cannot be sliced: JSON.parse of the body. So
 * each round sends the body twice: first as a webhook of another version, which the gateway
 * parses and answers 400 (its longest block is that parse), then as it is; the second's longest
 * block is held to a small multiple of the first's. Both are measured in the same worker, a moment
 * apart, so the load of two shared cores stretches them alike (a share of the batch's whole time,
 * the bound before, moved with how fast the rest got). The best of four 4 MiB rounds
 * (GATEWAY_MAX_BODY_BYTES raised) is held to the bound: done in one piece (SLICE_MS=1e9), the
 * ingestion held the loop 2.8× as long as its parse in the best round; sliced, 1.0–1.3× (Node 22
 * and 26). The 1 MiB figure against the 50 ms target is in `npm run bench`.
 */

const MAX_BODY = 4 * 1024 * 1024
/** The longest block of an ingestion, as a multiple of the longest block of parsing its body. */
const BOUND = 2

test('a 4 MiB batch: every alert stored, and the loop never held much longer than its JSON.parse', async (t) => {
  const redis = await startRedis()
  t.after(() => redis.stop())
  const sc = await startReady({
    env: gatewayEnv({ REDIS_URL: redis.url, GATEWAY_MAX_BODY_BYTES: String(MAX_BODY) }),
  })
  t.after(() => stop(sc, 'SIGKILL'))
  const base = await sc.url('gateway')
  const metricsUrl = `${await sc.url('metrics')}/metrics`
  const loopMax = async () => {
    const m = metric(await (await fetch(metricsUrl)).text(), 'sia_worker_event_loop_delay_max_seconds', {
      service: 'gateway',
    })
    assert.ok(m !== undefined, 'the gauge is exported')
    return m
  }
  /** The longest block of the gateway's loop while `send` runs. */
  const held = async (send: () => Promise<void>) => {
    await loopMax() // resets it
    await send()
    return loopMax()
  }
  const parseOnly = (payload: Record<string, unknown>) => async () => {
    const r = await post(base, { ...payload, version: '3' })
    assert.equal(r.status, 400, `a version 3 webhook: ${JSON.stringify(r.body).slice(0, 300)}`)
  }

  // Warm up first (a fresh worker compiles its code on the first batch): what is measured is the
  // work of a batch, not the JIT's.
  const warm = bigBatch(128 * 1024, 'Warm')
  await parseOnly(warm.payload)()
  assert.equal((await post(base, warm.payload)).status, 201)
  // Three fresh batches, then the last one again (all duplicates). A batch done in one piece
  // holds the loop in every round; the scheduling noise of a loaded machine comes and goes, so the
  // best round is what is held to the bound.
  const parses: number[] = []
  const ingests: number[] = []
  let stored = warm.count
  let last: Record<string, unknown> = {}
  for (const round of [1, 2, 3, 4]) {
    const batch = round < 4 ? bigBatch(MAX_BODY - 1024, `Big${round}x`) : undefined
    const payload = batch?.payload ?? last
    const count = (payload.alerts as unknown[]).length
    assert.ok(JSON.stringify(payload).length > MAX_BODY * 0.95)
    parses.push(await held(parseOnly(payload)))
    ingests.push(
      await held(async () => {
        const r = await post(base, payload)
        const want = batch
          ? { status: 201, created: count, duplicates: 0 }
          : { status: 202, created: 0, duplicates: count }
        assert.deepEqual(
          { status: r.status, created: r.body.created, duplicates: r.body.duplicates },
          want,
          `round ${round}: ${JSON.stringify(r.body).slice(0, 300)}`,
        )
      }),
    )
    if (batch) stored += count
    last = payload
  }
  const ms = (x: number) => `${(x * 1000).toFixed(0)}ms`
  t.diagnostic(
    `${(last.alerts as unknown[]).length} alerts a batch; loop held at most ${ingests.map(ms).join(', ')} ingesting, ${parses.map(ms).join(', ')} parsing`,
  )
  const best = Math.min(...ingests.map((m, i) => m / parses[i]!))
  assert.ok(
    best < BOUND,
    `in its best round the gateway's loop was held ${best.toFixed(2)}× as long as by parsing the body alone`,
  )
  assert.equal(readJsonLines(join(sc.dataDir, 'alerts.jsonl')).length, stored)
  assert.equal(await stop(sc), 0)
})
