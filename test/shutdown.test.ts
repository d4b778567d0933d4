import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { eventually } from './support/eventually.js'
import { alert, SIGNALS, webhook } from './support/gateway.js'
import { assertLifecycle, ORDER } from './support/lifecycle.js'
import { serverPorts } from './support/ports.js'
import { type Sidecar, startReady, startSidecar, stop } from './support/sidecar.js'

function configFile(doc: unknown): string {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-cfg-')), 'sia.json')
  writeFileSync(path, JSON.stringify(doc))
  return path
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url)
  return { status: res.status, body: await res.text() }
}

/** A GET on a keep-alive connection of `agent`: the status and what the answer says of the connection. */
function getOn(agent: Agent, url: string): Promise<{ status: number; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    request(url, { agent }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }))
    })
      .on('error', reject)
      .end()
  })
}

test("readiness drops to 503 at the first instant of shutdown, before any service stops; the gateway's answers close their connections", async (t) => {
  const sc = await startReady({ env: { SHUTDOWN_DELAY: '1500ms' } })
  t.after(() => stop(sc, 'SIGKILL'))
  const health = await sc.url('healthcheck')
  const gateway = await sc.url('gateway')
  const agent = new Agent({ keepAlive: true })
  t.after(() => agent.destroy())
  assert.deepEqual(await getOn(agent, `${health}/readyz`), { status: 200, connection: 'keep-alive' })
  assert.deepEqual(await getOn(agent, `${gateway}/ready`), { status: 200, connection: 'keep-alive' })
  sc.kill('SIGTERM')
  await sc.waitForEvent('supervisor.cancelled')
  // The pod leaves the Service's endpoints, but a kept-alive connection would stay pinned to it.
  assert.deepEqual(await getOn(agent, `${gateway}/ready`), { status: 503, connection: 'close' })
  const ready = await get(`${health}/readyz`)
  assert.equal(ready.status, 503)
  assert.equal(JSON.parse(ready.body).phase, 'shutting-down')
  assert.equal(sc.events('service.shutdown.begin').length, 0, 'nothing has stopped yet')
  // The pod's own ports (probes, scrapes, the token server) are reached on the pod: nothing to move.
  assert.deepEqual(
    await getOn(agent, `${health}/healthz`),
    { status: 200, connection: 'keep-alive' },
    'liveness stays 200 while shutting down',
  )
  assert.equal((await sc.exited).code, 0)
  assertLifecycle(sc.records)
})

test('a service that hangs in shutdown is terminated at its deadline; the others still stop; exit 1', async () => {
  const sc = await startReady({
    env: { SIA_FAILPOINTS: 'gateway.shutdown=hang' },
    args: ['--config', configFile({ services: { gateway: { shutdownTimeout: '400ms' } } })],
  })
  const t0 = Date.now()
  assert.equal(await stop(sc), 1)
  assert.ok(Date.now() - t0 < 10_000, 'the deadline bounded the shutdown')
  assert.deepEqual(
    sc.events('service.shutdown.timeout').map((r) => r.service),
    ['gateway'],
  )
  // The terminated gateway never reported its server task stopped; every other task did.
  const gatewayTask = (r: { service: string; event?: string }) =>
    r.service === 'gateway' && r.event?.startsWith('service.task')
  assert.deepEqual(
    sc.records.filter(gatewayTask).map((r) => r.event),
    ['service.task.started'],
  )
  assertLifecycle(sc.records.filter((r) => !gatewayTask(r)))
  assert.deepEqual(sc.events('supervisor.exit')[0]?.code, 1)
})

test('a thread still draining after a reload is held to the shutdown deadline: every service stops in the budget', async () => {
  // The gateway may take 20 s to drain, the process 3 s: a predecessor still draining a request
  // when SIGTERM comes is cut at the gateway's deadline, as the current thread would be, and the
  // services after it still get their shutdown.
  const ports = await serverPorts()
  const sc = await startReady({
    args: ['--config', configFile({ services: { gateway: { shutdownTimeout: '20s' } } })],
    env: { ...ports.env, SHUTDOWN_TIMEOUT: '3s', SIA_FAILPOINTS: 'gateway.before-sink=1*delay(60000)' },
  })
  const metrics = `${await sc.url('metrics')}/metrics`
  void fetch(`${await sc.url('gateway')}${SIGNALS}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(webhook([alert('HeldAtTheSink')])),
  }).catch(() => {})
  await eventually(
    async () =>
      /gateway_signals_received_total\{[^}]*\} [1-9]/.test(await (await fetch(metrics)).text()) || undefined,
  )
  sc.kill('SIGHUP')
  await sc.waitForEvent('supervisor.reload.done', {}, 30_000)
  sc.kill('SIGTERM')
  assert.equal((await sc.exited).code, 1, 'a drain cut short is unclean')
  assert.equal(sc.events('supervisor.exit')[0]?.cause, 'signal', 'not the budget watchdog')
  assert.deepEqual(
    sc.events('service.shutdown.done').map((r) => r.service),
    [...ORDER].reverse(),
  )
  // The gateway's deadline was what was left of the budget: the services after it have none left,
  // and are terminated at once (but each is reached, and the exit is the supervisor's own).
  assert.deepEqual(sc.events('service.shutdown.timeout')[0], {
    ...sc.events('service.shutdown.timeout')[0],
    service: 'gateway',
    predecessor: true,
  })
})

test('a replaced thread blocked in native code at SIGTERM: the process still exits in its budget, leaving it behind', async (t) => {
  // The gateway's predecessor blocks in open() as its drain closes the server (a system call no
  // terminate() ends): process.exit() would join it for ever.
  const fifo = join(mkdtempSync(join(tmpdir(), 'sia-wedge-')), 'wedge.fifo')
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0)
  const ports = await serverPorts()
  const sc = await startReady({
    args: ['--config', configFile({ services: { gateway: { shutdownTimeout: '20s' } } })],
    env: {
      ...ports.env,
      SHUTDOWN_TIMEOUT: '2s',
      NODE_OPTIONS: `--import=${new URL('./support/wedge-close.js', import.meta.url).href}`,
      WEDGE_FIFO: fifo,
      WEDGE_THREAD: 'gateway',
    },
  })
  t.after(() => stop(sc, 'SIGKILL'))
  sc.kill('SIGHUP')
  await sc.waitForEvent('supervisor.reload.done', {}, 30_000)
  const t0 = performance.now()
  sc.kill('SIGTERM')
  const exit = await Promise.race([sc.exited, sleep(15_000).then(() => undefined)])
  assert.ok(exit, 'the process is still up 15 s after SIGTERM, with a budget of 2 s')
  assert.equal(exit.code, 1)
  // The budget is 2 s, plus at most 1 s to end threads; the margin is for a loaded machine.
  assert.ok(performance.now() - t0 < 6000, `exited ${Math.round(performance.now() - t0)} ms after SIGTERM`)
})

test('a second SIGTERM during a slow shutdown is logged and does not cut it short', async () => {
  const sc: Sidecar = await startReady({ env: { SIA_FAILPOINTS: 'gateway.shutdown=delay(1200)' } })
  sc.kill('SIGTERM')
  await sc.waitForEvent('service.shutdown.begin', { service: 'gateway' })
  sc.kill('SIGTERM')
  await sc.waitForEvent('supervisor.signal.ignored')
  sc.kill('SIGINT')
  assert.equal((await sc.exited).code, 0)
  assert.deepEqual(
    sc.events('supervisor.signal.ignored').map((r) => r.signal),
    ['SIGTERM', 'SIGINT'],
  )
  assertLifecycle(sc.records)
  const gatewayDone = sc.events('service.shutdown.done').find((r) => r.service === 'gateway')
  assert.ok((gatewayDone?.ms as number) >= 1100, 'the gateway got its whole shutdown')
})

test('a start that never answers fails at startTimeout and cancels the run: exit 1', async () => {
  const sc = startSidecar({
    env: { SIA_FAILPOINTS: 'token.start=hang' },
    args: [
      '--config',
      configFile({ services: { token: { startTimeout: '500ms', shutdownTimeout: '300ms' } } }),
    ],
  })
  assert.equal((await sc.exited).code, 1)
  const failed = sc.events('service.start.failed')[0]
  assert.equal(failed?.service, 'token')
  assert.match(JSON.stringify(failed?.err), /ERR_START_TIMEOUT/)
  assert.deepEqual(
    sc.events('service.start.skipped').map((r) => r.service),
    ORDER.slice(2),
  )
  assert.deepEqual(
    sc.events('service.shutdown.done').map((r) => r.service),
    [...ORDER].reverse(),
  )
  // Its start, abandoned at the shutdown's deadline, is work cut short; the others stopped clean.
  assert.deepEqual(
    sc
      .events('service.shutdown.done')
      .flatMap((r) => (r.outcome === 'clean' ? [] : [[r.service, r.outcome]])),
    [['token', 'timeout']],
  )
  assert.deepEqual(
    sc.events('service.shutdown.timeout').map((r) => r.service),
    ['token'],
  )
})

test('a start that hangs after creating a task: its stop still ends that task (task.stopped), exit 1', async () => {
  const sc = startSidecar({
    env: { SIA_FAILPOINTS: 'token.before-task:refresh-timer=hang' },
    // Its start, hung, winds down for its shutdownTimeout (30 s by default) before the stops.
    args: ['--config', configFile({ services: { token: { startTimeout: '1s', shutdownTimeout: '2s' } } })],
  })
  assert.equal((await sc.exited).code, 1)
  assert.match(JSON.stringify(sc.events('service.start.failed')[0]?.err), /ERR_START_TIMEOUT/)
  assert.deepEqual(
    sc
      .events('service.task.started')
      .filter((r) => r.service === 'token')
      .map((r) => r.task),
    ['server'],
  )
  assertLifecycle(sc.records)
})

test('a port already in use fails that start clearly; everything is shut down; exit 1', async () => {
  const taken = createServer()
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r))
  const { port } = taken.address() as AddressInfo
  try {
    const sc = startSidecar({ env: { GATEWAY_ADDR: `127.0.0.1:${port}` } })
    assert.equal((await sc.exited).code, 1)
    const failed = sc.events('service.start.failed')
    assert.deepEqual(
      failed.map((r) => r.service),
      ['gateway'],
    )
    assert.match(JSON.stringify(failed[0]?.err), /EADDRINUSE/)
    assert.deepEqual(
      sc.events('service.start.skipped').map((r) => r.service),
      ['metrics', 'healthcheck'],
    )
    assertLifecycle(sc.records)
  } finally {
    taken.close()
  }
})

test('an idle service given less shutdown time than the ack margin still stops clean: exit 0', async () => {
  const sc = await startReady({
    args: ['--config', configFile({ services: { metrics: { shutdownTimeout: '240ms' } } })],
  })
  assert.equal(await stop(sc, 'SIGTERM'), 0)
  assert.deepEqual(sc.events('service.shutdown.timeout'), [])
  assert.equal(sc.events('service.shutdown.done').find((r) => r.service === 'metrics')?.outcome, 'clean')
})

test('SIGTERM while idle exits 0 promptly', async () => {
  const sc = await startReady()
  await sleep(100)
  assert.equal(await stop(sc, 'SIGTERM'), 0)
  assert.equal(sc.events('supervisor.cancelled')[0]?.signal, 'SIGTERM')
})
