import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { Agent, get, request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { RELAY_LINGER_MS } from '../supervisor/port-hold.js'
import { eventually } from './support/eventually.js'
import { alert, readJsonLines, SIGNALS, webhook } from './support/gateway.js'
import { serverPorts } from './support/ports.js'
import { parsePromText } from './support/prom-text.js'
import { startReady, startSidecar, stop } from './support/sidecar.js'

/**
 * DESIGN.md §8: a worker is replaced (restart, recycle, SIGHUP reload) with no refused connection:
 * the successor listens on the same address (SO_REUSEPORT) before its predecessor drains.
 */

interface Tally {
  ok: number
  refused: number
  failed: string[]
  /** A keep-alive connection closed by the server just as a request went out on it: the one case
   * Node's documentation says to retry (`req.reusedSocket`), as every HTTP client does. */
  retried: number
  /** Requests a crashing worker was serving (reset or hung up), sent again as AlertManager does. */
  resent: number
}

const RESET = new Set(['ECONNRESET', 'EPIPE', 'socket hang up'])

function send(agent: Agent, url: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', agent, headers: { 'content-type': 'application/json' } },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
        res.on('error', reject)
      },
    )
    req.on('error', (err: NodeJS.ErrnoException) => reject(Object.assign(err, { reused: req.reusedSocket })))
    req.end(body)
  })
}

/**
 * One keep-alive client sending `next()` until `until` resolves. `resend`: a request cut by the
 * server's death is sent again (a webhook sender's retry), up to 5 times.
 */
async function client(
  url: string,
  next: () => string,
  until: Promise<void>,
  tally: Tally,
  resend = false,
): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  let done = false
  void until.then(() => {
    done = true
  })
  while (!done) {
    const body = next()
    for (let attempt = 0; ; attempt++) {
      try {
        const status = await send(agent, url, body)
        if (status >= 200 && status < 300) tally.ok++
        else tally.failed.push(`HTTP ${status}`)
        break
      } catch (err) {
        const e = err as NodeJS.ErrnoException & { reused?: boolean }
        if (e.code === 'ECONNREFUSED') tally.refused++
        const reset = RESET.has(e.code ?? '') || RESET.has(e.message)
        if (e.reused && attempt < 3 && reset) {
          tally.retried++
          continue
        }
        if (resend && attempt < 5 && reset) {
          tally.resent++
          continue
        }
        tally.failed.push(`${e.code ?? e.message}`)
        break
      }
    }
  }
  agent.destroy()
}

/**
 * With SO_REUSEPORT, a connection the kernel queued on the predecessor's listening socket in the
 * instant that socket closes is reset, unless the kernel migrates it to the successor's
 * (net.ipv4.tcp_migrate_req, Linux 5.14+). The test turns it on where it may, as the README tells
 * operators to; the old value is put back after.
 */
function migrateRequests(t: TestContext): boolean {
  const path = '/proc/sys/net/ipv4/tcp_migrate_req'
  try {
    const before = readFileSync(path, 'utf8').trim()
    writeFileSync(path, '1')
    t.after(() => writeFileSync(path, before))
    return true
  } catch {
    return false
  }
}

// Alone in its file (not beside another replacement test): it measures what clients see under load.
test('crashes, a recycle and a SIGHUP reload under load: no refused connection, no failed request, no lost alert', async (t) => {
  const migrating = migrateRequests(t)
  const ports = await serverPorts()
  const { token, gateway, health } = ports
  const dir = mkdtempSync(join(tmpdir(), 'sia-replace-'))
  const configPath = join(dir, 'config.json')
  // The token worker is over its recycling threshold all the time: it is recycled every 3s. The
  // gateway keeps its default restart policy: the first crash restarts at once, the second after
  // 50–100 ms, its port held by the supervisor all along.
  writeFileSync(
    configPath,
    JSON.stringify({ services: { token: { recycleAtPercent: 1, restartWindow: '3s' } } }),
  )
  const sinkFile = join(dir, 'alerts.jsonl')
  const sc = await startReady({
    args: ['--config', configPath],
    env: {
      ...ports.env,
      GATEWAY_SINK_FILE: sinkFile,
      // The gateway crashes on its first two sink writes: under load, with requests in flight.
      SIA_FAILPOINTS: 'gateway.before-sink=2*crash',
    },
  })

  let stopLoad!: () => void
  const until = new Promise<void>((r) => {
    stopLoad = r
  })
  const tokens: Tally = { ok: 0, refused: 0, failed: [], retried: 0, resent: 0 }
  const alerts: Tally = { ok: 0, refused: 0, failed: [], retried: 0, resent: 0 }
  const sent: string[] = []
  const load = [
    ...Array.from({ length: 8 }, () =>
      client(`http://127.0.0.1:${token}/roletoken`, () => '{"domain":"demo","role":"reader"}', until, tokens),
    ),
    ...Array.from({ length: 8 }, (_, c) =>
      client(
        `http://127.0.0.1:${gateway}${SIGNALS}`,
        () => {
          const name = `Replace${c}x${sent.length}`
          sent.push(name)
          return JSON.stringify(webhook([alert(name)]))
        },
        until,
        alerts,
        true,
      ),
    ),
  ]
  // Readiness is polled all along, as the kubelet probes (a new connection each time): a
  // replacement (recycle, reload) never makes it drop. A crash may: the service did fail, for the
  // moment its restart takes (its port held meanwhile); those samples are kept apart.
  const notReady: string[] = []
  let crashesOver = false
  const notReadyDuringCrashes: string[] = []
  const probe = () =>
    new Promise<string>((resolve) => {
      get(`http://127.0.0.1:${health}/readyz`, { agent: false, headers: { connection: 'close' } }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.on('end', () => resolve(res.statusCode === 200 ? '200' : `${res.statusCode} ${body}`))
      }).on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    })
  const probing = (async () => {
    let done = false
    void until.then(() => {
      done = true
    })
    while (!done) {
      // A probe is classed by when it was sent: one sent during a crash may be answered after the
      // test has read that the crash is over.
      const samples = crashesOver ? notReady : notReadyDuringCrashes
      const status = await probe()
      if (status !== '200') samples.push(status)
      await sleep(50)
    }
  })()

  // Two gateway crashes under load: each time the supervisor held the port until a new worker served.
  await sc.waitForCount('worker.replaced', 2, { service: 'gateway', reason: 'restart' }, 15_000)
  await sc.waitForCount('worker.port.released', 2, { service: 'gateway', handedOver: true })
  crashesOver = true
  // A recycle of the token worker under load, then a reload of every worker.
  const recycles = sc.events('worker.replaced').filter((r) => r.reason === 'recycle').length
  await sc.waitForCount('worker.replaced', recycles + 1, { service: 'token', reason: 'recycle' }, 15_000)
  // The reload re-reads the file, which now ends the recycling: a reload that reaches a worker in
  // the middle of its recycle skips it (its successor starts on the new configuration already), and
  // on a loaded machine the reload of the services before it can outlast the 3 s between recycles.
  writeFileSync(
    configPath,
    JSON.stringify({ services: { token: { recycleAtPercent: 100, restartWindow: '3s' } } }),
  )
  sc.kill('SIGHUP')
  const reloaded = await sc.waitForEvent('supervisor.reload.done', {}, 30_000)
  await sleep(300)
  stopLoad()
  await Promise.all([...load, probing])

  assert.deepEqual(
    (reloaded.outcomes as { outcome: string }[]).map((o) => o.outcome),
    Array(6).fill('replaced'),
  )
  for (const service of ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck']) {
    await sc.waitForEvent('worker.replaced', { service, reason: 'reload' })
  }
  // Each replaced worker's drain is its service's last shutdown, on the scrape.
  const scraped = parsePromText(await (await fetch(`${await sc.url('metrics')}/metrics`)).text())
  for (const service of ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck']) {
    const drained = scraped.find(
      (m) => m.name === 'sia_service_shutdown_duration_seconds' && m.labels.service === service,
    )
    assert.ok(drained && drained.value >= 0 && drained.value < 30, `${service}'s drain: ${drained?.value}`)
  }
  assert.equal(tokens.refused + alerts.refused, 0, 'no refused connection')
  // Only requests the two crashing workers were serving were cut (8 clients each time at most).
  assert.equal(tokens.resent, 0)
  assert.ok(alerts.resent <= 16, `${alerts.resent} requests cut by the crashes`)
  const failed = [...tokens.failed, ...alerts.failed]
  if (migrating) assert.deepEqual(failed, [], 'no failed request')
  else
    assert.ok(
      failed.every((f) => f === 'ECONNRESET'),
      `only resets of queued connections: ${failed}`,
    )
  assert.ok(tokens.ok > 50 && alerts.ok > 50, `load ran: ${tokens.ok} tokens, ${alerts.ok} alerts`)
  assert.deepEqual(notReady, [], 'readiness stayed 200 through the recycle and the reload')
  assert.ok(
    notReadyDuringCrashes.every((status) => status.startsWith('503 ')),
    `a crash makes readiness 503 for its restart, never unanswered: ${notReadyDuringCrashes}`,
  )

  assert.equal(await stop(sc), 0)
  const stored = new Set(readJsonLines(sinkFile).map((r) => (r.labels as Record<string, string>).alertname))
  assert.deepEqual(
    sent.filter((name) => !stored.has(name)),
    [],
    'every alert that got a 2xx is in the sink',
  )
})

// Each test has its own sidecar and ports, and most wait on a failpoint's delay: two at a time.
/**
 * A sidecar ready on a config file of its own (`file`, rewritten by the test for a reload), every
 * server on a free port, with `env` (failpoints…).
 */
async function readyOnConfigFile(file: object, env: Record<string, string> = {}) {
  const configPath = join(mkdtempSync(join(tmpdir(), 'sia-reload-')), 'config.json')
  writeFileSync(configPath, JSON.stringify(file))
  const ports = await serverPorts()
  const sc = await startReady({ args: ['--config', configPath], env: { ...ports.env, ...env } })
  return { sc, configPath, ports }
}

/** One alert, named `name`, posted to the gateway at `url`: the answer's status. */
function postAlert(url: string, name: string): Promise<number> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(webhook([alert(name)])),
    signal: AbortSignal.timeout(20_000),
  }).then((r) => r.status)
}

/**
 * The TCP sockets process `pid` holds that relay to `port` or from one of `clientPorts` to it
 * (/proc/<pid>/fd for its sockets, /proc/<pid>/net/tcp* for their addresses).
 */
function relayedSockets(pid: number, port: number, clientPorts: ReadonlySet<number | undefined>): number {
  const inodes = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`, { encoding: 'utf8' })
    } catch {
      continue // closed since the listing
    }
    const socket = /^socket:\[(\d+)\]$/.exec(target)
    if (socket) inodes.add(socket[1]!)
  }
  let n = 0
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length < 10 || !inodes.has(f[9]!)) continue
      const local = Number.parseInt(f[1]!.split(':')[1]!, 16)
      const remote = Number.parseInt(f[2]!.split(':')[1]!, 16)
      if (remote === port || (local === port && clientPorts.has(remote))) n++
    }
  }
  return n
}

describe('worker replacement', { concurrency: 2 }, () => {
  test('SIGHUP with an invalid config file, or one changing what needs a restart: logged, nothing replaced, still serving; its warnings said', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-reload-'))
    const configPath = join(dir, 'config.json')
    writeFileSync(configPath, JSON.stringify({ logLevel: 'info' }))
    const sc = await startReady({ args: ['--config', configPath] })
    writeFileSync(configPath, JSON.stringify({ tokenServerTimeout: 'soon' }))
    sc.kill('SIGHUP')
    const failed = await sc.waitForEvent('supervisor.reload.failed')
    assert.match(JSON.stringify(failed.err), /tokenServerTimeout/)
    assert.deepEqual(sc.events('worker.replacing'), [])
    assert.equal((await fetch(`${await sc.url('healthcheck')}/readyz`)).status, 200)
    // A setting the process cannot change in place is refused the same way.
    writeFileSync(configPath, JSON.stringify({ shutdownTimeout: '5s' }))
    sc.kill('SIGHUP')
    const fixed = await sc.waitForCount('supervisor.reload.failed', 2)
    assert.match(JSON.stringify(fixed.err), /shutdownTimeout can change only with a restart/)
    // The supervisor's log file is opened once: a reload cannot move it.
    writeFileSync(configPath, JSON.stringify({ logDir: join(dir, 'logs') }))
    sc.kill('SIGHUP')
    const logDir = await sc.waitForCount('supervisor.reload.failed', 3)
    assert.match(JSON.stringify(logDir.err), /logDir can change only with a restart/)
    writeFileSync(configPath, JSON.stringify({ failpoints: 'token.start=delay(10)' }))
    sc.kill('SIGHUP')
    const failpoints = await sc.waitForCount('supervisor.reload.failed', 4)
    assert.match(JSON.stringify(failpoints.err), /failpoints can change only with a restart/)
    // init runs once and exits: a running sidecar cannot become one (it said reloaded, and ran on).
    // What a refused file warns of is not said: it is not taken.
    const warns = { services: { 'memory-reporter': { shutdownTimeout: '1h' } } }
    writeFileSync(configPath, JSON.stringify({ mode: 'init', ...warns }))
    sc.kill('SIGHUP')
    const mode = await sc.waitForCount('supervisor.reload.failed', 5)
    assert.match(JSON.stringify(mode.err), /mode can change only with a restart/)
    // The probes' path, as their port: the kubelet would get a 404 and restart the pod.
    writeFileSync(configPath, JSON.stringify({ healthCheckEndpoint: '/alive' }))
    sc.kill('SIGHUP')
    const probe = await sc.waitForCount('supervisor.reload.failed', 6)
    assert.match(JSON.stringify(probe.err), /healthCheckEndpoint can change only with a restart/)
    assert.deepEqual(sc.events('worker.replacing'), [])
    assert.deepEqual(sc.events('config.warning'), [])
    // What a file warns of is said on a reload too, as at boot.
    writeFileSync(configPath, JSON.stringify(warns))
    sc.kill('SIGHUP')
    const warning = await sc.waitForEvent('config.warning')
    assert.equal(warning.reload, true)
    assert.match(String(warning.setting), /services\.memory-reporter\.shutdownTimeout/)
    await sc.waitForEvent('supervisor.reload.done')
    assert.equal(await stop(sc), 0)
  })

  test('a reload whose successor cannot start on the new configuration: that service keeps its worker and its configuration, its restarts too; the reload is said failed', async () => {
    // The first webhook that reaches the sink crashes the gateway: after the reload, its restart.
    const { sc, configPath } = await readyOnConfigFile(
      { logLevel: 'info' },
      { SIA_FAILPOINTS: 'gateway.before-sink=1*crash' },
    )
    try {
      // Valid, but no gateway thread can start within it.
      writeFileSync(configPath, JSON.stringify({ services: { gateway: { startTimeout: '1ms' } } }))
      sc.kill('SIGHUP')
      await sc.waitForEvent('worker.replace.failed', { service: 'gateway' }, 30_000)
      const failed = await sc.waitForEvent('supervisor.reload.failed', {}, 30_000)
      assert.equal((failed.err as { code?: string }).code, 'ERR_RELOAD_PARTIAL')
      const outcomes = failed.outcomes as { service: string; outcome: string }[]
      assert.deepEqual(
        outcomes.filter((o) => o.outcome !== 'replaced'),
        [{ service: 'gateway', outcome: 'failed' }],
      )
      assert.deepEqual(sc.events('supervisor.reload.done'), [])
      const url = `${await sc.url('gateway')}${SIGNALS}`
      const post = (name: string) => postAlert(url, name)
      // It crashes; its restart starts on the configuration it ran on, and serves.
      await post('Crash').catch(() => 0)
      await sc.waitForEvent('worker.restarting', { service: 'gateway' })
      await sc.waitForEvent('worker.port.released', { service: 'gateway', handedOver: true }, 30_000)
      assert.equal(await post('After'), 201)
      assert.deepEqual(sc.events('worker.crash-loop'), [])
      assert.deepEqual(sc.events('service.start.timeout'), [])
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('a reload that meets a service in back-off: its restart that cannot start on the new configuration drops it and restarts on the previous one (no crash loop); the reload is said failed for it', async () => {
    // The first two webhooks that reach the sink crash the gateway: the second restart waits
    // 4 to 8 s, time for the reload to replace the five services before it and meet it there.
    const gateway = { restartBackoff: '8s', restartBackoffMax: '8s' }
    const { sc, configPath } = await readyOnConfigFile(
      { logLevel: 'info', services: { gateway } },
      { SIA_FAILPOINTS: 'gateway.before-sink=2*crash' },
    )
    try {
      const url = `${await sc.url('gateway')}${SIGNALS}`
      const post = (name: string) => postAlert(url, name)
      await post('Crash').catch(() => 0)
      await sc.waitForEvent('worker.port.released', { service: 'gateway', handedOver: true }, 30_000)
      await post('Crash again').catch(() => 0)
      assert.equal((await sc.waitForCount('worker.restarting', 2, { service: 'gateway' })).attempt, 2)
      // Valid, but no gateway thread can start within it.
      const next = { services: { gateway: { ...gateway, startTimeout: '1ms', restartBackoff: '100ms' } } }
      writeFileSync(configPath, JSON.stringify(next))
      sc.kill('SIGHUP')
      const done = await sc.waitForEvent('supervisor.reload.done', {}, 30_000)
      assert.deepEqual(
        (done.outcomes as { service: string; outcome: string }[]).filter((o) => o.outcome !== 'replaced'),
        [{ service: 'gateway', outcome: 'skipped' }],
      )
      // Its restart starts on the new configuration, and cannot: that configuration is dropped.
      await sc.waitForEvent('service.start.timeout', { service: 'gateway' }, 30_000)
      const failed = await sc.waitForEvent('supervisor.reload.failed', { service: 'gateway' }, 30_000)
      assert.equal((failed.err as { code?: string }).code, 'ERR_RELOAD_PARTIAL')
      // The next restart starts on the configuration the service ran on, and serves.
      await sc.waitForCount('worker.restarted', 2, { service: 'gateway' }, 30_000)
      assert.equal(await post('After'), 201)
      assert.equal(sc.events('service.start.timeout').length, 1)
      assert.deepEqual(sc.events('worker.crash-loop'), [])
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('a SIGHUP during boot or during a reload is not lost: one more reload runs once that ends', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-reload-'))
    const configPath = join(dir, 'config.json')
    writeFileSync(configPath, JSON.stringify({ logLevel: 'info' }))
    const ports = await serverPorts()
    // Every start of the gateway takes 1.5 s: at boot, and in each reload.
    const sc = startSidecar({
      args: ['--config', configPath],
      env: { ...ports.env, SIA_FAILPOINTS: 'gateway.start=delay(1500)' },
    })
    try {
      await sc.waitForEvent('service.start.begin', { service: 'gateway' })
      sc.kill('SIGHUP')
      assert.equal((await sc.waitForEvent('supervisor.reload.queued')).during, 'boot')
      await sc.waitForEvent('supervisor.ready')
      // The reload has read the file once it replaces a worker.
      await sc.waitForEvent('worker.replacing', { service: 'certificate' })
      // An edit made while that reload runs, and its SIGHUP: applied by the next reload.
      writeFileSync(configPath, JSON.stringify({ tokenServerTimeout: 'soon' }))
      sc.kill('SIGHUP')
      assert.equal((await sc.waitForCount('supervisor.reload.queued', 2)).during, 'reload')
      await sc.waitForEvent('supervisor.reload.done')
      const failed = await sc.waitForEvent('supervisor.reload.failed')
      assert.match(JSON.stringify(failed.err), /tokenServerTimeout/, 'the file as it was after the edit')
      assert.equal(sc.events('supervisor.reload').length, 2)
      assert.deepEqual(sc.events('supervisor.signal.ignored'), [])
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('SIGTERM in the middle of a reload: the reload says which services it replaced and which it did not reach, and the exit is 0', async () => {
    // The token worker's successor takes 1.5 s to start (the first hit is the boot's): SIGTERM then.
    const sc = await startReady({
      env: { ...(await serverPorts()).env, SIA_FAILPOINTS: 'token.before-task:refresh-timer=2*delay(1500)' },
    })
    try {
      sc.kill('SIGHUP')
      await sc.waitForEvent('worker.replaced', { service: 'certificate', reason: 'reload' })
      await sc.waitForCount('service.task.started', 2, { service: 'token', task: 'server' })
      sc.kill('SIGTERM')
      const done = await sc.waitForEvent('supervisor.reload.done')
      assert.deepEqual(done.outcomes, [
        { service: 'certificate', outcome: 'replaced' },
        { service: 'token', outcome: 'cancelled' },
        { service: 'memory-reporter', outcome: 'cancelled' },
        { service: 'gateway', outcome: 'cancelled' },
        { service: 'metrics', outcome: 'cancelled' },
        { service: 'healthcheck', outcome: 'cancelled' },
      ])
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('a SIGHUP while a restart starts: that thread, spawned on the old configuration, is replaced once it is up', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-reload-'))
    const configPath = join(dir, 'config.json')
    writeFileSync(configPath, JSON.stringify({ memoryReportInterval: '60s' }))
    const sc = await startReady({
      args: ['--config', configPath],
      // The memory reporter crashes once after its start; every start of it takes 4 s (the reload
      // replaces two services before it: 1.5 s was not enough on a loaded run).
      env: {
        SIA_FAILPOINTS: 'memory-reporter.before-task:reporter=1*crash;memory-reporter.start=delay(4000)',
      },
    })
    try {
      const restarting = await sc.waitForEvent('worker.restarting', { service: 'memory-reporter' })
      // Half a second into its restart's 4 s start: that thread was spawned on the old file.
      await sleep((restarting.delayMs as number) + 500)
      writeFileSync(configPath, JSON.stringify({ memoryReportInterval: '300ms' }))
      sc.kill('SIGHUP')
      const done = await sc.waitForEvent('supervisor.reload.done', {}, 30_000)
      const outcome = (done.outcomes as { service: string; outcome: string }[]).find(
        (o) => o.service === 'memory-reporter',
      )
      assert.equal(outcome?.outcome, 'deferred')
      await sc.waitForEvent('worker.replaced', { service: 'memory-reporter', reason: 'reload' }, 30_000)
      // The new configuration runs: a report every 300 ms.
      await sc.waitForCount('memory.report', 2)
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('the worker a reload replaces crashes while its successor starts: its port is held, no connection refused', async () => {
    // Every start of the gateway takes 2 s; the first webhook that reaches the sink crashes it.
    const { sc } = await readyOnConfigFile(
      { logLevel: 'info' },
      { SIA_FAILPOINTS: 'gateway.start=delay(2000);gateway.before-sink=1*crash' },
    )
    try {
      const url = `${await sc.url('gateway')}${SIGNALS}`
      sc.kill('SIGHUP')
      await sc.waitForEvent('worker.replacing', { service: 'gateway' }, 30_000)
      // Served by the worker being replaced, which crashes on it: its successor is 2 s from serving.
      const post = (name: string) => postAlert(url, name)
      await post('Crash').catch(() => 0)
      await sc.waitForEvent('worker.port.held', { service: 'gateway' })
      // A connection made now is held, then answered by the successor.
      assert.equal(await post('Held'), 201)
      await sc.waitForEvent('worker.port.released', { service: 'gateway', handedOver: true })
      // Nothing overlapped: the successor restarted the service.
      const replaced = await sc.waitForEvent('worker.replaced', { service: 'gateway' })
      assert.deepEqual([replaced.reason, replaced.overlapMs], ['restart', 0])
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('clients parked on a held port that never close their side, once answered: the supervisor lets go of their relayed connections', async () => {
    // Every start of the gateway takes 3 s (its successor's, while the port is held, too); the
    // first webhook that reaches the sink crashes it.
    const { sc, ports } = await readyOnConfigFile(
      { logLevel: 'info' },
      { SIA_FAILPOINTS: 'gateway.start=delay(3000);gateway.before-sink=1*crash' },
    )
    const clients: Socket[] = []
    try {
      await postAlert(`${await sc.url('gateway')}${SIGNALS}`, 'Crash').catch(() => 0)
      await sc.waitForEvent('worker.port.held', { service: 'gateway' })
      // Its thread gone, nothing else listens: each client is parked by the supervisor.
      await sc.waitForEvent('worker.crashed', { service: 'gateway' })
      // Each asks, reads the answer and the server's end (it asked for `connection: close`), and
      // never ends its own side.
      const answers = Array.from({ length: 20 }, () => {
        const c = connect({ host: '127.0.0.1', port: ports.gateway, allowHalfOpen: true })
        clients.push(c)
        let got = ''
        c.on('data', (d) => {
          got += d
        })
        c.write('GET /readyz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n')
        return new Promise<string>((resolve, reject) => {
          c.once('end', () => resolve(got))
          c.once('error', reject)
        })
      })
      await Promise.all(clients.map((c) => new Promise((resolve) => c.once('connect', resolve))))
      const released = await sc.waitForEvent('worker.port.released', { service: 'gateway' })
      assert.deepEqual([released.handedOver, released.connections], [true, 20], 'all 20 parked, then relayed')
      for (const answer of await Promise.all(answers)) assert.match(answer, /^HTTP\/1\.1 \d{3} /)
      // The successor has closed its side of each: the supervisor's two sockets for each (the
      // client's, the one to the successor) go once the relay's linger is over.
      const clientPorts = new Set(clients.map((c) => c.localPort))
      const relayed = () => relayedSockets(sc.proc.pid!, ports.gateway, clientPorts)
      await eventually(async () => (relayed() === 0 ? true : undefined), RELAY_LINGER_MS + 5000).catch(() => {
        assert.fail(`${relayed()} sockets still open on the supervisor's side`)
      })
    } finally {
      for (const c of clients) c.destroy()
      assert.equal(await stop(sc), 0)
    }
  })

  test('the worker a reload replaces blocks while its successor starts: its watchdog ends it then, and its port is held until the successor serves', async () => {
    // Every start of the gateway takes 6 s; the first webhook that reaches the sink blocks its loop.
    const { sc, ports } = await readyOnConfigFile(
      { services: { gateway: { watchdogTimeout: '2s' } } },
      { SIA_FAILPOINTS: 'gateway.start=delay(6000);gateway.before-sink=1*block' },
    )
    try {
      const url = `${await sc.url('gateway')}${SIGNALS}`
      const post = (name: string) => postAlert(url, name)
      sc.kill('SIGHUP')
      await sc.waitForEvent('worker.replacing', { service: 'gateway' }, 30_000)
      // Served by the worker being replaced, which blocks on it; its successor is 6 s from serving.
      void post('Block').catch(() => 0)
      // Ended at its watchdog's timeout, not when its successor is up (or its start deadline).
      const watchdog = await sc.waitForEvent(
        'worker.watchdog',
        { service: 'gateway', predecessor: true },
        30_000,
      )
      assert.equal(watchdog.watchdogTimeoutMs, 2000)
      assert.deepEqual(
        sc.events('worker.replaced').filter((e) => e.service === 'gateway'),
        [],
      )
      await sc.waitForEvent('worker.port.held', { service: 'gateway' })
      // Once the blocked thread is gone (until then a connection may still be queued on its
      // listener, and is reset with it: README, Worker replacement), one made is held, then
      // answered by the successor.
      const crashed = await sc.waitForEvent('worker.crashed', { service: 'gateway' })
      assert.equal(crashed.reason, 'watchdog')
      assert.deepEqual(sc.events('worker.port.released'), [], 'still held: the successor is not up')
      assert.equal(await post('Held'), 201)
      await sc.waitForEvent('worker.port.released', { service: 'gateway', handedOver: true })
      const replaced = await sc.waitForEvent('worker.replaced', { service: 'gateway' })
      assert.deepEqual([replaced.reason, replaced.overlapMs], ['restart', 0])
      assert.equal((await fetch(`http://127.0.0.1:${ports.health}/healthz`)).status, 200)
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('the worker its watchdog ends: the connections queued on its listener while it was blocked are answered by its successor (tcp_migrate_req)', async (t) => {
    // Where the kernel migrates them (README, Worker replacement); the watchdog ends the thread
    // only once the supervisor listens beside it. Ended first, in about half the kills every
    // queued connection was reset, with no listener left to migrate to.
    if (!migrateRequests(t)) return t.skip('net.ipv4.tcp_migrate_req cannot be set here')
    const { sc } = await readyOnConfigFile(
      { services: { gateway: { watchdogTimeout: '2s' } } },
      { SIA_FAILPOINTS: 'gateway.before-sink=1*block' },
    )
    try {
      const url = `${await sc.url('gateway')}${SIGNALS}`
      const blocked = postAlert(url, 'Block').catch(() => 0)
      // Its loop blocks on that webhook's sink step; every connection made from now on is queued,
      // unaccepted, on the blocked thread's listener (the only one until the watchdog).
      await sleep(500)
      assert.deepEqual(sc.events('worker.watchdog'), [], 'queued before the watchdog')
      const queued = Array.from({ length: 20 }, (_, i) =>
        postAlert(url, `Queued${i}`).catch((err: Error) =>
          String((err.cause as Error | undefined)?.message ?? err),
        ),
      )
      await sc.waitForEvent('worker.watchdog', { service: 'gateway' }, 30_000)
      assert.deepEqual(await Promise.all(queued), Array(20).fill(201))
      await blocked
      await sc.waitForEvent('worker.port.released', { service: 'gateway', handedOver: true })
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('the worker a reload replaces blocks while it drains: its watchdog ends it, not its drain deadline', async () => {
    const { sc, ports } = await readyOnConfigFile(
      { services: { gateway: { watchdogTimeout: '2s' } } },
      {
        // The first gateway thread told to stop (the one the reload replaces) blocks its loop there.
        SIA_FAILPOINTS: 'gateway.shutdown=1*block',
        SHUTDOWN_TIMEOUT: '60s', // the drain's deadline: not what ends a blocked predecessor
      },
    )
    try {
      sc.kill('SIGHUP')
      const watchdog = await sc.waitForEvent(
        'worker.watchdog',
        { service: 'gateway', predecessor: true },
        30_000,
      )
      assert.equal(watchdog.watchdogTimeoutMs, 2000)
      const replaced = await sc.waitForEvent('worker.replaced', { service: 'gateway' }, 10_000)
      assert.equal(replaced.reason, 'reload')
      assert.deepEqual(sc.events('service.shutdown.timeout'), [])
      assert.equal((await fetch(`http://127.0.0.1:${ports.health}/healthz`)).status, 200)
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('a successor the shutdown calls off while it still loads is not taken for a blocked thread: it winds down, exit 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-reload-'))
    const configPath = join(dir, 'config.json')
    writeFileSync(configPath, JSON.stringify({ services: { certificate: { watchdogTimeout: '2s' } } }))
    // A successor thread that takes 3 s of synchronous work to load (a cold cache, a loaded machine).
    const preload = join(dir, 'slow-successor.cjs')
    writeFileSync(
      preload,
      `const { isMainThread, workerData } = require('node:worker_threads')
if (!isMainThread && workerData && workerData.successor === true) {
  const t = Date.now()
  while (Date.now() - t < 3000) {}
}
`,
    )
    const sc = await startReady({
      args: ['--config', configPath],
      command: (node, argv) => ({ file: node, args: ['--require', preload, ...argv] }),
    })
    sc.kill('SIGHUP')
    await sc.waitForEvent('worker.replacing', { service: 'certificate' })
    assert.equal(await stop(sc), 0)
    assert.deepEqual(sc.events('worker.watchdog'), [])
  })

  test('a predecessor whose drain fails says so: one that hangs is cut at its deadline, one that ends its thread is a crash', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-reload-'))
    const configPath = join(dir, 'config.json')
    writeFileSync(
      configPath,
      JSON.stringify({ services: { 'memory-reporter': { shutdownTimeout: '300ms' } } }),
    )
    // The first drain of the memory reporter never ends; the first of the health check ends its thread.
    const ports = await serverPorts()
    const sc = await startReady({
      args: ['--config', configPath],
      env: { ...ports.env, SIA_FAILPOINTS: 'memory-reporter.shutdown=1*hang;healthcheck.shutdown=1*exit(3)' },
    })
    try {
      sc.kill('SIGHUP')
      await sc.waitForEvent('supervisor.reload.done', {}, 30_000)
      const replaced = (service: string) =>
        sc.waitForEvent('worker.replaced', { service, reason: 'reload' }, 30_000)
      const [hung, ended] = await Promise.all([replaced('memory-reporter'), replaced('healthcheck')])
      const timeouts = sc.events('service.shutdown.timeout')
      assert.deepEqual(
        timeouts.map((r) => [r.service, r.predecessor, r.deadlineMs]),
        [['memory-reporter', true, 300]],
      )
      assert.ok(sc.records.indexOf(timeouts[0]!) < sc.records.indexOf(hung), 'said before the replacement')
      const crashes = sc.events('worker.crashed')
      assert.deepEqual(
        crashes.map((r) => [r.service, r.predecessor, r.reason, r.exitCode]),
        [['healthcheck', true, 'exit', 3]],
      )
      assert.ok(sc.records.indexOf(crashes[0]!) < sc.records.indexOf(ended), 'said before the replacement')
      // The successors serve; the run's own shutdown is clean.
      assert.equal((await fetch(`${await sc.url('healthcheck')}/readyz`)).status, 200)
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('a successor called off by the shutdown whose drain fails is named as the new thread, not the previous one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-reload-'))
    const configPath = join(dir, 'config.json')
    writeFileSync(
      configPath,
      JSON.stringify({ services: { 'memory-reporter': { shutdownTimeout: '400ms', startTimeout: '10s' } } }),
    )
    const ports = await serverPorts()
    // Every start of the memory reporter takes 2.5 s; the first drain of one never ends.
    const sc = startSidecar({
      args: ['--config', configPath],
      env: {
        ...ports.env,
        SIA_FAILPOINTS: 'memory-reporter.start=delay(2500);memory-reporter.shutdown=1*hang',
      },
    })
    try {
      await sc.waitForEvent('supervisor.ready', {}, 30_000)
      sc.kill('SIGHUP')
      await sc.waitForEvent('worker.replacing', { service: 'memory-reporter' }, 30_000)
      await sleep(500) // its successor's start is under way: the predecessor still serves
    } finally {
      assert.equal(await stop(sc), 1, 'a drain cut at its deadline is unclean')
    }
    const timeouts = sc.events('service.shutdown.timeout').filter((r) => r.service === 'memory-reporter')
    // Cut at its own deadline or at the stop's, whichever comes first: either way, the new thread.
    assert.deepEqual(
      timeouts.map((r) => [r.successor, r.predecessor]),
      [[true, undefined]],
    )
    assert.match(String(timeouts[0]!.msg), /^memory-reporter's new thread (did not drain|was still draining)/)
  })
})
