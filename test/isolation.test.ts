import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { alert, post, webhook } from './support/gateway.js'
import { type LogRecord, type Sidecar, type SidecarOptions, startSidecar, stop } from './support/sidecar.js'

/**
 * Crash isolation (issue 5), through the real CLI: faults injected with failpoints in one worker,
 * the restart policy from a config file, and the other services observed from the outside.
 */

const SERVICES = ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck']
const HEARTBEAT_MS = 1000

/** Writes `{ services }` to a config file in a temp dir and returns the CLI arguments for it. */
function withConfig(services: Record<string, Record<string, unknown>>): string[] {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-iso-')), 'config.json')
  writeFileSync(path, JSON.stringify({ services }))
  return ['--config', path]
}

/** A sidecar that is killed if the test ends without stopping it (a failed assertion). */
function launch(t: TestContext, opts: SidecarOptions): Sidecar {
  const sc = startSidecar(opts)
  t.after(() => {
    if (sc.proc.exitCode === null && sc.proc.signalCode === null) sc.kill('SIGKILL')
  })
  return sc
}

/** Fast restarts keep the file quick; the intensity limit is untouched (5 in 60s). */
const FAST = { restartBackoff: '20ms', restartBackoffMax: '100ms' }

interface Reply {
  status: number
  body: string
}

function httpRequest(url: string, method = 'GET', body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        text += d
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

const roleToken = (base: string) => httpRequest(`${base}/roletoken`, 'POST', '{"domain":"d"}')

/** Base URL of the current worker of `service` (a restarted worker listens on a new port 0). */
function latestUrl(sc: Sidecar, service: string): string {
  const r = sc.records.findLast((x) => x.event === 'server.listening' && x.service === service)
  assert.ok(r, `${service} is listening`)
  return `http://127.0.0.1:${r.port as number}`
}

function eventsOf(sc: Sidecar, event: string, service: string): LogRecord[] {
  return sc.events(event).filter((r) => r.service === service)
}

/** Resolves once `service` has logged `event` `n` times. */
function nth(sc: Sidecar, event: string, service: string, n: number, timeoutMs = 20_000) {
  let seen = 0
  return sc.waitFor((r) => r.event === event && r.service === service && ++seen === n, timeoutMs)
}

async function metricsText(sc: Sidecar): Promise<string> {
  const r = await httpRequest(`${latestUrl(sc, 'metrics')}/metrics`)
  assert.equal(r.status, 200, r.body)
  return r.body
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

/** Readiness as the health check answers it, waiting out a restart in progress. */
async function readyz(sc: Sidecar, expect: number): Promise<Reply> {
  const url = `${latestUrl(sc, 'healthcheck')}/readyz`
  for (let i = 0; ; i++) {
    const r = await httpRequest(url)
    if (r.status === expect || i === 50) return r
    await sleep(100)
  }
}

/** Every service got shutdown.begin and shutdown.done, and the run ended with `code`. */
function assertStoppedEverything(sc: Sidecar, code: number, cause: string): void {
  for (const s of SERVICES) {
    assert.equal(eventsOf(sc, 'service.shutdown.begin', s).length, 1, `${s} shutdown.begin`)
    assert.equal(eventsOf(sc, 'service.shutdown.done', s).length, 1, `${s} shutdown.done`)
  }
  const exit = sc.events('supervisor.exit')
  assert.equal(exit.length, 1)
  assert.equal(exit[0]?.code, code)
  assert.equal(exit[0]?.cause, cause)
}

/** POSTs to the token server back to back until stopped; counts what failed and why. */
function hammer(base: string) {
  let running = true
  const done: { at: number; status: number }[] = []
  const failures: string[] = []
  const loop = (async () => {
    while (running) {
      try {
        const r = await roleToken(base)
        done.push({ at: Date.now(), status: r.status })
        if (r.status !== 200) failures.push(`HTTP ${r.status}: ${r.body}`)
      } catch (err) {
        failures.push(String(err))
      }
    }
  })()
  return {
    done,
    failures,
    async stop() {
      running = false
      await loop
    },
  }
}

// Each test has a sidecar of its own: two at a time, the watchdog's timing apart (after).
describe('crash isolation', { concurrency: 2 }, () => {
  test('gateway crashes 3 times while a client hammers the token server: no token request fails', async (t) => {
    const sc = launch(t, {
      // The first crash waits a moment, so the hammer is already running when it strikes.
      env: { SIA_FAILPOINTS: 'gateway.start=1*delay(1000);gateway.before-task:server=3*crash' },
      args: withConfig({ gateway: FAST }),
    })
    const load = hammer(await sc.url('token'))
    const firstCrash = await nth(sc, 'worker.crashed', 'gateway', 1)
    const seenCrashAt = Date.now()
    await nth(sc, 'worker.restarted', 'gateway', 3)
    await sc.waitForEvent('supervisor.ready')
    await sleep(200)
    await load.stop()

    assert.deepEqual(load.failures, [], 'no token request failed')
    assert.ok(load.done.some((d) => d.at < seenCrashAt) && load.done.some((d) => d.at > seenCrashAt))

    const crashes = eventsOf(sc, 'worker.crashed', 'gateway')
    assert.equal(crashes.length, 3)
    for (const c of crashes) {
      assert.equal(c.reason, 'exception')
      assert.equal(c.exitCode, 1)
      assert.match((c.err as { message: string }).message, /injected crash/)
    }
    assert.equal(firstCrash.level, 'error')
    const restarts = eventsOf(sc, 'worker.restarting', 'gateway')
    assert.deepEqual(
      restarts.map((r) => r.attempt),
      [1, 2, 3],
    )
    for (const r of restarts) {
      assert.equal(r.reason, 'exception')
      assert.ok(typeof r.delayMs === 'number' && r.delayMs >= 0 && r.delayMs <= 100, `delayMs ${r.delayMs}`)
    }

    // The gateway is back: a fresh worker serving, readiness and liveness 200.
    assert.equal((await readyz(sc, 200)).status, 200)
    assert.equal((await httpRequest(`${latestUrl(sc, 'healthcheck')}/healthz`)).body, 'OK')
    assert.equal((await httpRequest(`${latestUrl(sc, 'gateway')}/nowhere`)).status, 404)

    // The metrics service reaches the restarted worker through its new control channel.
    const text = await metricsText(sc)
    assert.equal(sample(text, 'sia_worker_restarts_total{service="gateway",reason="exception"}'), 3)
    assert.equal(sample(text, 'sia_worker_up{service="gateway"}'), 1)
    assert.equal(sample(text, 'sia_worker_tasks{service="gateway"}'), 1)
    assert.equal(sample(text, 'sia_worker_restarts_total{service="token",reason="exception"}'), 0)

    assert.equal(await stop(sc), 0)
    assertStoppedEverything(sc, 0, 'signal')
  })

  test('OOM against resourceLimits: reason oom, the process lives on, the worker restarts', async (t) => {
    const sc = launch(t, {
      // A 32 MiB heap holds an in-memory dedup store of a thousand fingerprints, not the default 100,000.
      env: { SIA_FAILPOINTS: 'gateway.before-task:server=1*oom', GATEWAY_DEDUP_MAX_ENTRIES: '1000' },
      args: withConfig({ gateway: { ...FAST, resourceLimits: { maxOldGenerationSizeMb: 32 } } }),
    })
    const crash = await nth(sc, 'worker.crashed', 'gateway', 1)
    assert.equal(crash.reason, 'oom')
    assert.equal((crash.err as { code?: string }).code, 'ERR_WORKER_OUT_OF_MEMORY')
    await nth(sc, 'worker.restarted', 'gateway', 1)
    await sc.waitForEvent('supervisor.ready')
    assert.equal(sc.proc.exitCode, null, 'the process is alive')
    assert.equal((await readyz(sc, 200)).status, 200)
    assert.equal((await roleToken(latestUrl(sc, 'token'))).status, 200)
    const text = await metricsText(sc)
    assert.equal(sample(text, 'sia_worker_restarts_total{service="gateway",reason="oom"}'), 1)
    // The restarted worker has its limit again: the 32 MiB old generation it was given.
    assert.equal(sample(text, 'sia_worker_heap_limit_bytes{service="gateway"}'), 32 * 2 ** 20)
    assert.equal(await stop(sc), 0)
  })

  test('while a worker waits to restart: readiness 503 names it, liveness 200; SIGTERM then is clean', async (t) => {
    const sc = launch(t, {
      // The first crash restarts at once; the second waits a back-off of 3s (jitter: 1.5s to 3s),
      // long enough to look at the process in between.
      env: { SIA_FAILPOINTS: 'gateway.before-task:server=2*crash' },
      args: withConfig({ gateway: { restartBackoff: '3s' } }),
    })
    await nth(sc, 'worker.restarting', 'gateway', 2)
    await sc.waitForEvent('supervisor.ready')
    const r = await readyz(sc, 503)
    assert.equal(r.status, 503)
    assert.deepEqual(JSON.parse(r.body).notReady, [{ service: 'gateway', state: 'restarting' }])
    const live = await httpRequest(`${latestUrl(sc, 'healthcheck')}/healthz`)
    assert.deepEqual([live.status, live.body], [200, 'OK'])
    assert.equal((await roleToken(latestUrl(sc, 'token'))).status, 200)
    assert.equal(eventsOf(sc, 'worker.restarted', 'gateway').length, 1, 'still waiting to restart')

    // A signal during the back-off: no restart any more, every service stops, exit 0.
    assert.equal(await stop(sc), 0)
    assert.equal(eventsOf(sc, 'worker.restarted', 'gateway').length, 1)
    assertStoppedEverything(sc, 0, 'signal')
  })

  test('crash loop: the 6th crash in the window escalates to a graceful shutdown, exit 1', async (t) => {
    const sc = launch(t, {
      env: { SIA_FAILPOINTS: 'gateway.before-task:server=6*crash' },
      args: withConfig({ gateway: { ...FAST, maxRestarts: 5, restartWindow: '1m' } }),
    })
    const { code } = await sc.exited
    assert.equal(code, 1, sc.stderr())
    assert.equal(eventsOf(sc, 'worker.crashed', 'gateway').length, 6)
    assert.deepEqual(
      eventsOf(sc, 'worker.restarting', 'gateway').map((r) => r.attempt),
      [1, 2, 3, 4, 5],
    )
    assert.equal(eventsOf(sc, 'worker.crash-loop', 'gateway').length, 1)
    const cancelled = sc.events('supervisor.cancelled')
    assert.equal(cancelled.length, 1)
    const at = (event: string) => sc.records.findIndex((r) => r.event === event)
    assert.ok(
      at('worker.crash-loop') < at('supervisor.cancelled'),
      'the crash loop is said before the cancel',
    )
    assert.equal(cancelled[0]?.cause, 'crash-loop')
    assert.equal(cancelled[0]?.service, 'gateway')
    assertStoppedEverything(sc, 1, 'crash-loop')
  })

  test('a temporary service stays down: readiness 503 names it, liveness 200, the others serve', async (t) => {
    const sc = launch(t, {
      env: { SIA_FAILPOINTS: 'gateway.before-task:server=1*crash' },
      args: withConfig({ gateway: { restart: 'temporary' } }),
    })
    await nth(sc, 'worker.down', 'gateway', 1)
    await sc.waitForEvent('supervisor.ready')
    assert.equal(eventsOf(sc, 'worker.crashed', 'gateway')[0]?.reason, 'exception')

    const r = await readyz(sc, 503)
    assert.equal(r.status, 503)
    assert.deepEqual(JSON.parse(r.body).notReady, [{ service: 'gateway', state: 'down' }])
    const live = await httpRequest(`${latestUrl(sc, 'healthcheck')}/healthz`)
    assert.deepEqual([live.status, live.body], [200, 'OK'])
    assert.equal((await roleToken(latestUrl(sc, 'token'))).status, 200)
    const text = await metricsText(sc)
    assert.equal(sample(text, 'sia_worker_up{service="gateway"}'), 0)
    await assert.rejects(httpRequest(`${latestUrl(sc, 'gateway')}/`), { code: 'ECONNREFUSED' })

    assert.deepEqual(eventsOf(sc, 'worker.restarting', 'gateway'), [])
    assert.equal(await stop(sc), 0)
    assertStoppedEverything(sc, 0, 'signal')
  })

  test('process.exit() and unhandled rejections in workers: reasons exit and exception, per policy', async (t) => {
    const sc = launch(t, {
      env: {
        SIA_FAILPOINTS: [
          'gateway.before-task:server=1*exit(3)',
          'memory-reporter.before-task:reporter=1*exit',
          'certificate.before-task:refresh-timer=1*reject',
          'metrics.before-task:server=1*crash',
        ].join(';'),
      },
      args: withConfig({
        gateway: { ...FAST, restart: 'transient' },
        'memory-reporter': { ...FAST, restart: 'transient' },
        certificate: FAST,
        metrics: FAST,
      }),
    })
    await nth(sc, 'worker.restarted', 'gateway', 1)
    await nth(sc, 'worker.restarted', 'certificate', 1)
    await nth(sc, 'worker.down', 'memory-reporter', 1)
    await nth(sc, 'worker.restarted', 'metrics', 1)
    await sc.waitForEvent('supervisor.ready')

    // transient: an abnormal exit restarts, a normal one (code 0) stays down.
    const gw = eventsOf(sc, 'worker.crashed', 'gateway')[0]
    assert.deepEqual([gw?.reason, gw?.exitCode], ['exit', 3])
    const mr = eventsOf(sc, 'worker.crashed', 'memory-reporter')[0]
    assert.deepEqual([mr?.reason, mr?.exitCode], ['exit', 0])
    assert.deepEqual(eventsOf(sc, 'worker.restarting', 'memory-reporter'), [])
    const cert = await nth(sc, 'worker.crashed', 'certificate', 1)
    assert.equal(cert.reason, 'exception')
    assert.match((cert.err as { message: string }).message, /injected rejection/)

    const r = await readyz(sc, 503)
    assert.deepEqual(JSON.parse(r.body).notReady, [{ service: 'memory-reporter', state: 'down' }])
    // The restarted metrics service scrapes the supervisor over its new control channel, and
    // through it every worker, the restarted ones included.
    const text = await metricsText(sc)
    assert.equal(sample(text, 'sia_worker_restarts_total{service="metrics",reason="exception"}'), 1)
    for (const s of ['gateway', 'certificate', 'metrics']) {
      assert.equal(sample(text, `sia_worker_up{service="${s}"}`), 1, s)
      assert.equal(sample(text, `sia_worker_tasks{service="${s}"}`), 1, s)
    }
    assert.equal(sample(text, 'sia_worker_restarts_total{service="gateway",reason="exit"}'), 1)
    assert.equal(sample(text, 'sia_worker_restarts_total{service="certificate",reason="exception"}'), 1)
    assert.equal(await stop(sc), 0)
  })

  test('recycling: a worker over recycleAtPercent is replaced gracefully, in-flight requests complete', async (t) => {
    const sc = launch(t, {
      // Its start waits a moment, so the requests below are in flight before it is recycled. A
      // 64 MiB heap holds token caches of a thousand tokens each, not the default ten thousand.
      env: {
        SIA_FAILPOINTS: 'token.before-task:refresh-timer=1*delay(1500)',
        TOKEN_CACHE_MAX_ENTRIES: '1000',
      },
      args: withConfig({
        token: { ...FAST, recycleAtPercent: 1, resourceLimits: { maxOldGenerationSizeMb: 64 } },
      }),
    })
    const base = await sc.url('token')
    // Requests that are in the server's hands: headers and half the body sent.
    const inFlight = Array.from({ length: 4 }, () => slowRoleToken(base))
    await Promise.all(inFlight.map((r) => r.started))
    const recycling = await nth(sc, 'worker.recycling', 'token', 1)
    assert.ok((recycling.heapUsedBytes as number) > 0)
    assert.equal(recycling.heapLimitBytes, 64 * 2 ** 20, 'the old generation the token worker was given')
    for (const r of inFlight) r.finish()
    const replies = await Promise.all(inFlight.map((r) => r.reply))
    assert.deepEqual(
      replies.map((r) => r.status),
      [200, 200, 200, 200],
    )
    for (const r of replies) assert.match(JSON.parse(r.body).token, /./)

    // A successor listened before its predecessor drained: no fault, no restart.
    const replaced = await nth(sc, 'worker.replaced', 'token', 1)
    assert.equal(replaced.reason, 'recycle')
    assert.deepEqual(eventsOf(sc, 'worker.crashed', 'token'), [])
    assert.equal((await roleToken(latestUrl(sc, 'token'))).status, 200)
    // Still over the threshold, but recycled at most once per restartWindow.
    await nth(sc, 'worker.recycle.held', 'token', 1)
    assert.equal(eventsOf(sc, 'worker.recycling', 'token').length, 1)
    await sc.waitForEvent('supervisor.ready')
    const text = await metricsText(sc)
    assert.equal(sample(text, 'sia_worker_restarts_total{service="token",reason="recycled"}'), 1)
    assert.equal(await stop(sc), 0)
    assertStoppedEverything(sc, 0, 'signal')
  })

  test('a crash during shutdown counts as that shutdown done, logged, and the exit code is 1', async (t) => {
    const sc = launch(t, { env: { SIA_FAILPOINTS: 'gateway.shutdown=crash' } })
    await sc.waitForEvent('supervisor.ready')
    assert.equal(await stop(sc), 1)
    const crash = eventsOf(sc, 'worker.crashed', 'gateway')
    assert.equal(crash.length, 1)
    assert.equal(crash[0]?.reason, 'exception')
    assert.deepEqual(eventsOf(sc, 'worker.restarting', 'gateway'), [])
    assertStoppedEverything(sc, 1, 'signal')
    // Services after it in the shutdown order were still shut down cleanly.
    const done = sc.events('service.shutdown.done').map((r) => r.service)
    assert.deepEqual(done, [...SERVICES].reverse())
  })

  test('a worker that dies after the run is cancelled, before its turn to stop, makes the exit code 1', async (t) => {
    // The gateway blocks right after its start; SIGTERM at once; during SHUTDOWN_DELAY the
    // watchdog ends it. Its turn finds it dead: logged, shut down, but not clean.
    const sc = launch(t, {
      env: { SIA_FAILPOINTS: 'gateway.before-task:server=block', SHUTDOWN_DELAY: '4s' },
      args: withConfig({ gateway: { ...FAST, watchdogTimeout: '2s' } }),
    })
    await sc.waitForEvent('supervisor.ready')
    sc.kill('SIGTERM')
    assert.equal((await sc.exited).code, 1)
    assert.equal(eventsOf(sc, 'worker.crashed', 'gateway')[0]?.reason, 'watchdog')
    assert.deepEqual(eventsOf(sc, 'worker.restarting', 'gateway'), [], 'no restart once the run is cancelled')
    assertStoppedEverything(sc, 1, 'signal')
  })
})

describe('a blocked event loop before its watchdog', () => {
  test('readiness 503 names the blocked service as stale, as liveness does (it said ready)', async (t) => {
    const sc = launch(t, {
      env: { SIA_FAILPOINTS: 'gateway.before-task:server=1*block' },
      args: withConfig({ gateway: { ...FAST, watchdogTimeout: '30s', shutdownTimeout: '1s' } }),
    })
    await sc.waitForEvent('supervisor.ready')
    const ready = await readyz(sc, 503)
    assert.equal(ready.status, 503, ready.body)
    assert.deepEqual((JSON.parse(ready.body) as { notReady: unknown[] }).notReady, [
      { service: 'gateway', state: 'running', stale: true },
    ])
    const live = await httpRequest(`${latestUrl(sc, 'healthcheck')}/healthz`)
    assert.equal(live.status, 503)
    assert.match(live.body, /gateway/)
    assert.equal(eventsOf(sc, 'worker.watchdog', 'gateway').length, 0, 'before the watchdog')
    await stop(sc)
  })
  test('its heartbeat stale, /metrics and the status page show its loop busy (1) and no heap figure, not its last beat’s; the status page says it did not answer, not “none yet”', async (t) => {
    const sc = launch(t, {
      env: { SIA_FAILPOINTS: 'gateway.before-sink=1*block' },
      args: withConfig({ gateway: { ...FAST, watchdogTimeout: '30s', shutdownTimeout: '1s' } }),
    })
    await sc.waitForEvent('supervisor.ready')
    await sleep(2 * HEARTBEAT_MS + 500) // beats of an idle loop: the last one before the block says ~0.001
    // Its first webhook blocks the gateway's loop before the sink (no answer: the block ends with the worker).
    void post(latestUrl(sc, 'gateway'), webhook([alert('WhileBlocked')])).catch(() => {})
    // Once liveness says the gateway is stale, as the figures below judge it.
    for (let i = 0; ; i++) {
      const live = await httpRequest(`${latestUrl(sc, 'healthcheck')}/healthz`)
      if (live.status === 503 && /gateway/.test(live.body)) break
      assert.ok(i < 100, `liveness never named the gateway stale: ${live.status} ${live.body}`)
      await sleep(100)
    }
    const text = await metricsText(sc)
    const of = (name: string, service = 'gateway') => sample(text, `${name}{service="${service}"}`)
    assert.equal(of('sia_worker_up'), 0)
    assert.equal(of('sia_worker_event_loop_utilization'), 1)
    assert.equal(of('sia_worker_heap_used_bytes'), undefined)
    assert.doesNotMatch(text, /^memory_report_heap_used_bytes\{[^}]*worker="gateway"/m)
    assert.ok((of('sia_worker_heap_limit_bytes') ?? 0) > 0, 'its limit is no reading: still shown')
    assert.ok((of('sia_worker_heap_used_bytes', 'token') ?? 0) > 0, 'a worker that beats keeps its figures')
    assert.ok((of('sia_worker_event_loop_utilization', 'token') ?? 1) < 1)
    const view = JSON.parse((await httpRequest(`${latestUrl(sc, 'metrics')}/status.json`)).body) as {
      unanswered: string[]
      gateway: { sinkErrors: number | null }
      workers: {
        service: string
        eventLoopUtilization: number | null
        heapUsedBytes: number | null
        heapPercent: number | null
      }[]
    }
    const gateway = view.workers.find((w) => w.service === 'gateway')!
    assert.deepEqual(
      [gateway.eventLoopUtilization, gateway.heapUsedBytes, gateway.heapPercent],
      [1, null, null],
    )
    // The gateway did not answer the view: its counts are not known, not "none yet" nor 0.
    assert.deepEqual(view.unanswered, ['gateway'])
    assert.equal(view.gateway.sinkErrors, null)
    const page = (await httpRequest(`${latestUrl(sc, 'metrics')}/status?refresh=0`)).body
    assert.match(page, /gateway did not answer/)
    assert.doesNotMatch(page, /none yet/)
    assert.equal(eventsOf(sc, 'worker.watchdog', 'gateway').length, 0, 'before the watchdog')
    await stop(sc)
  })
})

// Measured against the watchdog's clock: not beside another sidecar of this file.
describe('the watchdog', () => {
  test('a blocked event loop is ended by the watchdog within watchdogTimeout + one heartbeat', async (t) => {
    const sc = launch(t, {
      env: { SIA_FAILPOINTS: 'gateway.before-task:server=1*block' },
      args: withConfig({ gateway: { ...FAST, watchdogTimeout: '2s' } }),
    })
    const watchdog = await nth(sc, 'worker.watchdog', 'gateway', 1)
    const silentMs = watchdog.silentMs as number
    // silentMs counts from the last heartbeat, written at most one heartbeat before the block.
    assert.ok(silentMs > 2000 && silentMs <= 2000 + HEARTBEAT_MS, `silent for ${silentMs}ms`)
    const crash = await nth(sc, 'worker.crashed', 'gateway', 1)
    assert.equal(crash.reason, 'watchdog')
    assert.equal((await nth(sc, 'worker.restarting', 'gateway', 1)).reason, 'watchdog')
    await nth(sc, 'worker.restarted', 'gateway', 1)
    assert.equal((await readyz(sc, 200)).status, 200)
    assert.equal((await httpRequest(`${latestUrl(sc, 'healthcheck')}/healthz`)).status, 200)
    const text = await metricsText(sc)
    assert.equal(sample(text, 'sia_worker_restarts_total{service="gateway",reason="watchdog"}'), 1)
    assert.equal(await stop(sc), 0)
  })
})

/** A POST /roletoken whose body arrives in two parts: in flight until `finish()`. */
function slowRoleToken(base: string) {
  const body = '{"domain":"d"}'
  let started!: () => void
  let finish!: () => void
  const startedP = new Promise<void>((r) => {
    started = r
  })
  const finishP = new Promise<void>((r) => {
    finish = r
  })
  const reply = new Promise<Reply>((resolve, reject) => {
    const req = request(
      `${base}/roletoken`,
      {
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => {
          text += d
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
      },
    )
    req.on('error', reject)
    req.on('socket', (s) => s.once('connect', started))
    req.flushHeaders()
    req.write(body.slice(0, 5))
    void finishP.then(() => req.end(body.slice(5)))
  })
  return { started: startedP, finish, reply }
}
