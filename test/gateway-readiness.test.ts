import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createReadStream, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, type TestContext, test } from 'node:test'
import { Redis } from 'ioredis'
import { DEDUP_KEY_PREFIX } from '../workers/gateway/dedup-redis.js'
import { eventually } from './support/eventually.js'
import { alert, gatewayEnv, metric, post, webhook } from './support/gateway.js'
import { freePort } from './support/ports.js'
import { startRedis, waitForRedis } from './support/redis.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'
import { fillDisk, smallTmpfs } from './support/tmpfs.js'

/**
 * Readiness tells the truth (DESIGN.md §7): the gateway is not ready while its dedup store or its
 * sink is unusable, ready again once it recovers, and alive throughout. The built CLI, a real
 * redis-server, a real full file system.
 */

interface Probe {
  status: number
  body: { status?: string; notReady?: { service: string; state: string; degraded?: string }[] }
}

async function launch(t: TestContext, env: Record<string, string>): Promise<Sidecar> {
  const sc = await startReady({ env: gatewayEnv({ HEALTH_CHECK_ADDR: '127.0.0.1:0', ...env }) })
  t.after(() => stop(sc, 'SIGKILL'))
  return sc
}

async function probe(sc: Sidecar, path: string): Promise<Probe> {
  const res = await fetch(`${await sc.url('healthcheck')}${path}`)
  const text = await res.text()
  return { status: res.status, body: path === '/readyz' ? JSON.parse(text) : {} }
}

/** Polls /readyz until it answers `status`; returns that answer. */
function readyz(sc: Sidecar, status: number): Promise<Probe> {
  return eventually(async () => {
    const p = await probe(sc, '/readyz')
    return p.status === status ? p : undefined
  })
}

/** A sidecar whose gateway deduplicates on a Redis of its own, on `port`. */
async function withRedis(t: TestContext) {
  const port = await freePort()
  const redis = await startRedis(port)
  t.after(() => redis.stop())
  const sc = await launch(t, { REDIS_URL: `redis://127.0.0.1:${port}` })
  return { port, redis, sc, base: await sc.url('gateway') }
}

// Each test has its own Redis, sink and sidecar, and waits on the probe or a deadline: two at a time.
describe('gateway readiness', { concurrency: 2 }, () => {
  test('Redis stopped: not ready naming the gateway and redis, webhooks 503, alive; Redis back: ready', async (t) => {
    const { port, redis, sc, base } = await withRedis(t)
    assert.equal((await readyz(sc, 200)).body.status, 'ready')
    assert.equal((await post(base, webhook([alert('BeforeOutage')]))).status, 201)

    await redis.stop()
    const down = await readyz(sc, 503)
    assert.deepEqual(down.body.notReady, [{ service: 'gateway', state: 'running', degraded: 'redis' }])
    const refused = await post(base, webhook([alert('DuringOutage')]))
    assert.equal(refused.status, 503)
    assert.equal(refused.headers.get('retry-after'), '5')
    assert.equal((await probe(sc, '/healthz')).status, 200, 'liveness is not readiness')
    const gatewayReady = await fetch(`${base}/ready`)
    assert.equal(gatewayReady.status, 503, "the gateway's own /ready agrees")
    await sc.waitForEvent('gateway.not-ready', { degraded: 'redis' })

    const back = await startRedis(port)
    t.after(() => back.stop())
    assert.equal((await readyz(sc, 200)).body.status, 'ready')
    assert.equal((await post(base, webhook([alert('DuringOutage')]))).status, 201, 'the retry is stored')
    await sc.waitForEvent('gateway.ready-again')
    assert.equal(await stop(sc), 0)
  })

  test('Redis out of memory (connected, refusing writes): not ready naming redis; room again: ready with no webhook needed', async (t) => {
    const { port, sc, base } = await withRedis(t)
    assert.equal((await post(base, webhook([alert('BeforeOom')]))).status, 201)
    const admin = new Redis(port, '127.0.0.1', { lazyConnect: true })
    await admin.connect()
    t.after(() => admin.disconnect())
    await admin.set(`${DEDUP_KEY_PREFIX}poisoned`, 'someone else wrote this')
    await admin.call('CONFIG', 'SET', 'maxmemory-policy', 'noeviction')
    await admin.call('CONFIG', 'SET', 'maxmemory', '1')
    assert.equal((await post(base, webhook([alert('DuringOom')]))).status, 503)
    // AlertManager retries, each peer its own: every request fails the same way.
    const retries = await Promise.all(
      Array.from({ length: 20 }, () => post(base, webhook([alert('DuringOom')]))),
    )
    assert.deepEqual(
      retries.map((r) => r.status),
      Array(20).fill(503),
    )
    const down = await readyz(sc, 503)
    assert.deepEqual(down.body.notReady, [{ service: 'gateway', state: 'running', degraded: 'redis' }])
    assert.equal((await probe(sc, '/healthz')).status, 200, 'liveness is not readiness')
    // A key someone else wrote is read, not written: its refusal says nothing of the outage.
    const refused = await post(base, webhook([alert('Poisoned', { fingerprint: 'poisoned' })]))
    assert.equal(refused.status, 503)
    assert.match(String(refused.body.detail), /refused an alert's record/)
    assert.equal((await probe(sc, '/readyz')).status, 503, 'still not ready: Redis still refuses writes')
    assert.equal(sc.events('gateway.ready-again').length, 0)
    await admin.call('CONFIG', 'SET', 'maxmemory', '0')
    assert.equal((await readyz(sc, 200)).body.status, 'ready', 'a write probe saw the room, with no webhook')
    assert.equal((await post(base, webhook([alert('DuringOom')]))).status, 201, 'the retry is stored')
    assert.equal(await stop(sc), 0)
    // Said whole once a window (with Redis's error), the rest counted, written by the stop at the latest.
    const failed = sc.events('gateway.dedup.failed')
    const message = (r: (typeof failed)[number]) => String((r.err as { message: string }).message)
    const whole = failed.filter((r) => r.repeats === undefined)
    const oom = whole.filter((r) => /OOM/.test(message(r)))
    assert.ok(oom.length >= 1 && oom.length <= 2, `${oom.length} whole records`)
    assert.equal(message(whole[0]!), message(oom[0]!), "the first says Redis's error")
    assert.equal(whole.length - oom.length, 1, 'the refused key, another variant, said whole too')
    assert.equal(
      failed.reduce((n, r) => n + ((r.repeats as number | undefined) ?? 1), 0),
      22,
    )
  })

  test('a wrong Redis password: running but not ready, webhooks 503', async (t) => {
    const port = await freePort()
    const proc = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--requirepass', 'right-one'],
      { stdio: 'ignore' },
    )
    t.after(() => {
      proc.kill('SIGKILL')
    })
    await waitForRedis(port, 'right-one')
    const sc = await launch(t, { REDIS_URL: `redis://:wrong-one@127.0.0.1:${port}` })
    const down = await readyz(sc, 503)
    assert.deepEqual(down.body.notReady, [{ service: 'gateway', state: 'running', degraded: 'redis' }])
    assert.equal((await post(await sc.url('gateway'), webhook([alert('NoAuth')]))).status, 503)
    assert.equal((await probe(sc, '/healthz')).status, 200)
    assert.ok(!JSON.stringify(sc.records).includes('wrong-one'), 'the password is never logged')
    assert.equal(await stop(sc), 0)
  })

  test('the in-memory store and a working sink: ready, and no degraded field at all', async (t) => {
    const sc = await launch(t, {})
    const ok = await readyz(sc, 200)
    assert.deepEqual(ok.body.notReady, [])
    assert.equal(await stop(sc), 0)
  })

  test('the sink fails (disk full): not ready naming the sink; room again: ready with no webhook needed', async (t) => {
    let sc: Sidecar | undefined
    // The mount is busy while the sink file is open: the sidecar goes first.
    const mnt = smallTmpfs(t, 'sia-ready-full-', async () => sc && stop(sc, 'SIGKILL'))
    if (!mnt) return
    sc = await launch(t, { GATEWAY_SINK_FILE: join(mnt, 'alerts.jsonl') })
    const base = await sc.url('gateway')
    const big = (name: string) =>
      webhook([alert(name, { annotations: { summary: name, description: 'x'.repeat(6 * 1024) } })])
    assert.equal((await post(base, big('Room'))).status, 201)
    assert.equal((await readyz(sc, 200)).status, 200)

    const filler = join(mnt, 'filler')
    assert.equal(fillDisk(mnt), 'ENOSPC')
    assert.equal((await post(base, big('Full'))).status, 503)
    const down = await readyz(sc, 503)
    assert.deepEqual(down.body.notReady, [{ service: 'gateway', state: 'running', degraded: 'sink' }])
    assert.equal((await probe(sc, '/healthz')).status, 200, 'liveness is not readiness')
    const metrics = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
    assert.equal(metric(metrics, 'gateway_sink_up'), 0)
    // Still full a few probes later: still not ready.
    await new Promise((r) => setTimeout(r, 2500))
    assert.equal((await probe(sc, '/readyz')).status, 503, 'a probe finds no room yet')

    rmSync(filler)
    // No webhook in between: the gateway finds out by itself (a not-ready pod gets no traffic).
    assert.equal((await readyz(sc, 200)).body.status, 'ready')
    assert.equal((await post(base, big('Full'))).status, 201, 'the retry is stored')
    const lines = readFileSync(join(mnt, 'alerts.jsonl'), 'utf8')
    assert.ok(lines.endsWith('\n') && !lines.includes('  '), 'no probe filler is left in the sink file')
    assert.equal(await stop(sc), 0)
  })

  /**
   * A sidecar whose file sink is a FIFO nobody reads, and a webhook of more than a pipe holds
   * (64 KiB): its append blocks in the thread pool until someone reads. Returns that webhook.
   */
  async function hungSink(
    t: TestContext,
    env: Record<string, string> = {},
  ): Promise<{ sc: Sidecar; fifo: string; stuck: unknown }> {
    const fifo = join(mkdtempSync(join(tmpdir(), 'sia-fifo-')), 'alerts.fifo')
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0)
    const sc = await launch(t, { GATEWAY_SINK_FILE: fifo, GATEWAY_SINK_TIMEOUT: '1s', ...env })
    const alerts = Array.from({ length: 20 }, (_, i) =>
      alert(`Stuck${i}`, { annotations: { description: 'x'.repeat(6 * 1024) } }),
    )
    return { sc, fifo, stuck: webhook(alerts) }
  }

  test('the sink hangs (a FIFO nobody reads): 503 at GATEWAY_SINK_TIMEOUT, not ready naming the sink until it takes writes again', async (t) => {
    const { sc, fifo, stuck: payload } = await hungSink(t)
    const base = await sc.url('gateway')
    const stuck = await post(base, payload)
    assert.equal(stuck.status, 503, JSON.stringify(stuck.body))
    assert.match(JSON.stringify(stuck.body), /sink/)
    const down = await readyz(sc, 503)
    assert.deepEqual(down.body.notReady, [{ service: 'gateway', state: 'running', degraded: 'sink' }])
    // A later webhook waits behind the hung append and is not written after its answer either.
    assert.equal((await post(base, webhook([alert('Behind')]))).status, 503)
    await new Promise((r) => setTimeout(r, 2500))
    assert.equal((await probe(sc, '/readyz')).status, 503, 'still hung: still not ready')

    // Someone reads: the append returns, the gateway is ready again with no webhook in between.
    let read = ''
    const reader = createReadStream(fifo, 'utf8').on('data', (d) => {
      read += d
    })
    t.after(() => reader.destroy())
    assert.equal((await readyz(sc, 200)).body.status, 'ready')
    const after = await post(base, webhook([alert('AfterTheReader')]))
    assert.equal(after.status, 201)
    await eventually(async () => (read.includes('AfterTheReader') ? true : undefined))
    assert.ok(!read.includes('"Behind"'), 'the webhook dropped from the queue was never written')
    assert.equal(await stop(sc), 0)
  })

  test('SIGTERM while the sink hangs: the other services stop, and the process exits 1 leaving the held thread', async (t) => {
    const { sc, stuck } = await hungSink(t)
    assert.equal((await post(await sc.url('gateway'), stuck)).status, 503)
    // The append never returns, and a thread cannot end while one of its appends is in the pool.
    assert.equal(await stop(sc), 1)
    assert.equal(
      sc.events('service.stop.failed').filter((r) => r.service === 'gateway').length,
      1,
      'its close gave up',
    )
    const done = Object.fromEntries(sc.events('service.shutdown.done').map((r) => [r.service, r.outcome]))
    assert.deepEqual(done, {
      healthcheck: 'clean',
      metrics: 'clean',
      gateway: 'stuck',
      'memory-reporter': 'clean',
    })
    assert.deepEqual(sc.events('supervisor.exit')[0]?.stuck, ['gateway'])
    assert.equal(sc.events('supervisor.exit')[0]?.cause, 'signal')
  })

  test('SIGTERM while a webhook waits on a sink slower than the shutdown allows: its close gives up at the deadline', async (t) => {
    // The sink may take a minute, the shutdown 2 s: the webhook is still waiting on it at SIGTERM.
    const { sc, stuck } = await hungSink(t, { GATEWAY_SINK_TIMEOUT: '60s', SHUTDOWN_TIMEOUT: '2s' })
    const metrics = `${await sc.url('metrics')}/metrics`
    const answer = post(await sc.url('gateway'), stuck).catch((err: Error) => err)
    await eventually(async () =>
      metric(await (await fetch(metrics)).text(), 'gateway_inflight_requests') === 1 ? true : undefined,
    )
    assert.equal(await stop(sc), 1)
    assert.ok((await answer) instanceof Error, 'the drain cut the webhook at the deadline: no answer')
    // The worker answered the shutdown itself and said why, rather than being terminated while
    // its close waited a minute for the sink.
    assert.deepEqual(
      sc
        .events('service.stop.failed')
        .filter((r) => r.service === 'gateway')
        .map((r) => (r.err as { code?: string }).code),
      ['ERR_SINK_HUNG'],
    )
  })

  test('a SIGHUP while the sink hangs leaves the replaced thread stuck: SIGTERM then exits 1 naming it', async (t) => {
    const { sc, stuck } = await hungSink(t)
    assert.equal((await post(await sc.url('gateway'), stuck)).status, 503)
    // The successor serves; its predecessor's append never returns, so its thread cannot end.
    sc.kill('SIGHUP')
    await sc.waitForEvent('worker.stuck', { service: 'gateway' }, 30_000)
    assert.equal(await stop(sc), 1)
    const done = Object.fromEntries(sc.events('service.shutdown.done').map((r) => [r.service, r.outcome]))
    assert.equal(done.gateway, 'stuck', 'the service leaves a thread behind')
    assert.equal(done.metrics, 'clean')
    assert.deepEqual(sc.events('supervisor.exit')[0]?.stuck, ['gateway'])
  })
})
