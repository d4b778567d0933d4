import assert from 'node:assert/strict'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { DEDUP_KEY_PREFIX } from '../workers/gateway/dedup-redis.js'
import { eventually } from './support/eventually.js'
import { type Answer, alert, gatewayEnv, post, readJsonLines, webhook } from './support/gateway.js'
import { type RedisServer, startRedis } from './support/redis.js'
import { type Sidecar, type SidecarOptions, startSidecar, stop } from './support/sidecar.js'

/**
 * At-least-once under every fault, exactly-once in normal operation (DESIGN.md §7), through the
 * built CLI, a real Redis and the file sink: whatever dies between deduplication and the sink
 * write, AlertManager's retry of a request that got no 2xx is stored.
 */

/** Short leases, so a dead writer's lease runs out within the test. */
const LEASE = '1s'

/** A sidecar that is killed if the test ends without stopping it (a failed assertion). */
async function launch(t: TestContext, opts: SidecarOptions): Promise<Sidecar> {
  const sc = startSidecar(opts)
  t.after(() => {
    if (sc.proc.exitCode === null && sc.proc.signalCode === null) sc.kill('SIGKILL')
  })
  await sc.waitForEvent('supervisor.ready', {}, 30_000)
  return sc
}

/** Base URL of the current gateway worker (a restarted worker listens on a new port 0). */
function latestUrl(sc: Sidecar): string {
  const r = sc.records.findLast((x) => x.event === 'server.listening' && x.service === 'gateway')
  assert.ok(r, 'the gateway is listening')
  return `http://127.0.0.1:${r.port as number}`
}

type Attempt = number | 'no answer'

/** One POST as AlertManager sees it: a status, or no answer at all (connection lost). */
async function attempt(base: string, payload: unknown): Promise<{ status: Attempt; answer?: Answer }> {
  try {
    const answer = await post(base, payload)
    return { status: answer.status, answer }
  } catch {
    return { status: 'no answer' }
  }
}

/** AlertManager's retry: the same payload again after every non-2xx, until a 2xx. */
async function untilStored(
  base: () => string,
  payload: unknown,
  seen: Attempt[] = [],
  timeoutMs = 20_000,
): Promise<Answer> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const r = await attempt(base(), payload)
    seen.push(r.status)
    if (r.answer && is2xx(r.status)) return r.answer
    if (Date.now() > end) throw new Error(`not stored within ${timeoutMs}ms: ${seen.join(', ')}`)
    await sleep(100)
  }
}

const is2xx = (s: Attempt) => typeof s === 'number' && s >= 200 && s < 300

function countBy(values: unknown[]): Map<unknown, number> {
  const m = new Map<unknown, number>()
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1)
  return m
}

describe('gateway under faults (Redis dedup, file sink)', () => {
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

  const sinkPath = () => join(mkdtempSync(join(tmpdir(), 'sia-gw-faults-')), 'alerts.jsonl')

  test('gateway.before-sink=1*crash: no 2xx, the worker restarts, the retry is stored', async (t) => {
    const sinkFile = sinkPath()
    const sc = await launch(t, {
      env: gatewayEnv({
        REDIS_URL: redis.url,
        GATEWAY_SINK_FILE: sinkFile,
        GATEWAY_DEDUP_LEASE: LEASE,
        SIA_FAILPOINTS: 'gateway.before-sink=1*crash',
      }),
    })
    const payload = webhook([alert('CrashA'), alert('CrashB'), alert('CrashC')])
    const first = await attempt(latestUrl(sc), payload)
    assert.ok(!is2xx(first.status), `the crashed batch got ${first.status}`)
    const crash = await sc.waitForEvent('worker.crashed', { service: 'gateway' })
    assert.match((crash.err as { message: string }).message, /failpoint gateway\.before-sink: injected crash/)
    await sc.waitForEvent('worker.restarted', { service: 'gateway' })
    assert.deepEqual(readJsonLines(sinkFile), [], 'the worker died before the sink write of that batch')

    const seen: Attempt[] = []
    const stored = await untilStored(() => latestUrl(sc), payload, seen)
    assert.equal(stored.status, 201, `the retry is new, not a duplicate (attempts: ${seen.join(', ')})`)
    assert.deepEqual(stored.body, { created: 3, duplicates: 0, ignored: 0 })
    const names = readJsonLines(sinkFile).map((l) => l.alertname)
    assert.deepEqual(names.sort(), ['CrashA', 'CrashB', 'CrashC'])
    // A retry within the dead writer's lease was told to come back (503), never "duplicate".
    assert.ok(
      seen.every((s) => s === 503 || s === 201),
      seen.join(', '),
    )
    assert.equal((await post(latestUrl(sc), payload)).status, 202, 'then it is a duplicate')
    assert.equal(await stop(sc), 0)
  })

  test('SIGKILL of the sidecar mid-load: after a restart every alert is in the sink, no line torn', async (t) => {
    const sinkFile = sinkPath()
    const env = { REDIS_URL: redis.url, GATEWAY_SINK_FILE: sinkFile, GATEWAY_DEDUP_LEASE: LEASE }
    // A pause between dedup and the sink write: SIGKILL certainly lands on requests in that window.
    const first = await launch(t, {
      env: gatewayEnv({ ...env, SIA_FAILPOINTS: 'gateway.before-sink=delay(30)' }),
    })
    let current: Sidecar = first
    const CLIENTS = 4
    const BATCHES = 15
    const failures: Attempt[] = []
    let acked = 0
    const clients = Array.from({ length: CLIENTS }, async (_, c) => {
      for (let b = 0; b < BATCHES; b++) {
        const payload = webhook([alert(`Kill-${c}-${b}-x`), alert(`Kill-${c}-${b}-y`)])
        const seen: Attempt[] = []
        await untilStored(() => latestUrl(current), payload, seen, 30_000)
        failures.push(...seen.filter((s) => !is2xx(s)))
        acked++
      }
    })
    await eventually(async () => (acked >= 8 ? true : undefined))
    first.kill('SIGKILL')
    assert.equal((await first.exited).signal, 'SIGKILL')
    const second = await launch(t, { env: gatewayEnv(env) })
    current = second
    await Promise.all(clients)

    assert.ok(failures.length > 0, 'some request was cut by the SIGKILL and retried')
    const lines = readJsonLines(sinkFile) // throws on a line that does not parse
    const counts = countBy(lines.map((l) => l.alertname))
    for (let c = 0; c < CLIENTS; c++) {
      for (let b = 0; b < BATCHES; b++) {
        for (const x of ['x', 'y']) {
          assert.ok((counts.get(`Kill-${c}-${b}-${x}`) ?? 0) >= 1, `Kill-${c}-${b}-${x} is in the sink`)
        }
      }
    }
    assert.equal(counts.size, CLIENTS * BATCHES * 2)
    assert.equal(await stop(second), 0)
  })

  test('gateway.before-sink=hang: SIGTERM ends the worker at its deadline, the retry is stored', async (t) => {
    const sinkFile = sinkPath()
    const env = { REDIS_URL: redis.url, GATEWAY_SINK_FILE: sinkFile, GATEWAY_DEDUP_LEASE: LEASE }
    const first = await launch(t, {
      env: gatewayEnv({ ...env, SHUTDOWN_TIMEOUT: '1s', SIA_FAILPOINTS: 'gateway.before-sink=hang' }),
    })
    const payload = webhook([alert('Hung', { fingerprint: 'hung0001' })])
    const request = attempt(latestUrl(first), payload)
    // Deduplicated: the request holds a pending lease, and hangs before the sink write.
    await eventually(async () =>
      (await admin.hget(`${DEDUP_KEY_PREFIX}hung0001`, 'pending')) ? true : undefined,
    )
    const t0 = Date.now()
    first.kill('SIGTERM')
    assert.equal((await first.exited).code, 1, 'the gateway was terminated: an unclean shutdown')
    assert.ok(Date.now() - t0 < 3000, `out within SHUTDOWN_TIMEOUT + 1s (${Date.now() - t0}ms)`)
    assert.equal(first.events('service.shutdown.timeout').filter((r) => r.service === 'gateway').length, 1)
    assert.ok(!is2xx((await request).status))
    assert.deepEqual(readJsonLines(sinkFile), [])

    const second = await launch(t, { env: gatewayEnv(env) })
    const stored = await untilStored(() => latestUrl(second), payload)
    assert.equal(stored.status, 201)
    assert.deepEqual(
      readJsonLines(sinkFile).map((l) => l.fingerprint),
      ['hung0001'],
    )
    assert.equal(await stop(second), 0)
  })

  test('the answer does not wait for the commit, and SIGTERM finishes a commit in flight before Redis closes', async (t) => {
    const sinkFile = sinkPath()
    const sc = await launch(t, {
      env: gatewayEnv({
        REDIS_URL: redis.url,
        GATEWAY_SINK_FILE: sinkFile,
        GATEWAY_DEDUP_TIMEOUT: '10s',
        SIA_FAILPOINTS: 'gateway.before-sink=delay(500)',
      }),
    })
    const key = `${DEDUP_KEY_PREFIX}late0001`
    const request = post(latestUrl(sc), webhook([alert('Late', { fingerprint: 'late0001' })]))
    // The lease is taken and the request waits at the failpoint; then Redis takes no write for 2 s.
    await eventually(async () => ((await admin.hget(key, 'pending')) ? true : undefined))
    await admin.client('PAUSE', 2000, 'WRITE')
    const answer = await request
    assert.equal(answer.status, 201)
    assert.equal(await admin.hget(key, 'pending'), '1', 'answered while its commit waits on Redis')
    sc.kill('SIGTERM')
    assert.equal((await sc.exited).code, 0)
    assert.equal(await admin.hget(key, 'pending'), null, 'the commit was finished before Redis closed')
    assert.ok((await admin.pttl(key)) > 60_000, 'a committed record lives the TTL, not the lease')
    assert.deepEqual(
      readJsonLines(sinkFile).map((l) => l.fingerprint),
      ['late0001'],
    )
  })

  test('an AlertManager HA pair: two gateways get the same payloads at once, each alert stored once', async (t) => {
    const [fileA, fileB] = [sinkPath(), sinkPath()]
    // The pause between dedup and sink makes the two requests overlap: one writes, the other waits.
    const common = { REDIS_URL: redis.url, SIA_FAILPOINTS: 'gateway.before-sink=delay(50)' }
    const [a, b] = await Promise.all([
      launch(t, { env: gatewayEnv({ ...common, GATEWAY_SINK_FILE: fileA }) }),
      launch(t, { env: gatewayEnv({ ...common, GATEWAY_SINK_FILE: fileB }) }),
    ])
    const ROUNDS = 5
    const PER = 20
    for (let round = 0; round < ROUNDS; round++) {
      const alerts = Array.from({ length: PER }, (_, i) => alert(`HA-${round}-${i}`))
      const [ra, rb] = await Promise.all([
        post(latestUrl(a), webhook(alerts)),
        post(latestUrl(b), webhook([...alerts].reverse())),
      ])
      assert.ok(is2xx(ra.status) && is2xx(rb.status), `both answered 2xx: ${ra.status} ${rb.status}`)
      assert.equal((ra.body.created as number) + (rb.body.created as number), PER)
      assert.equal((ra.body.duplicates as number) + (rb.body.duplicates as number), PER)
    }
    const all = [...readJsonLines(fileA), ...readJsonLines(fileB)].map((l) => l.alertname)
    assert.equal(all.length, ROUNDS * PER, 'each alert exactly once across both sinks')
    assert.equal(new Set(all).size, ROUNDS * PER)
    assert.deepEqual(await Promise.all([stop(a), stop(b)]), [0, 0])
  })
})
