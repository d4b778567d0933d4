import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { test } from 'node:test'
import { alert, gatewayEnv, metric, post, webhook } from './support/gateway.js'
import { type Sidecar, startReady, startSidecar, stop } from './support/sidecar.js'
import { slowClient } from './support/slow-client.js'

/**
 * Slow clients cost a bounded amount (DESIGN.md §7): read deadlines on every server, and
 * GATEWAY_MAX_INFLIGHT counts ingestion, not bodies still arriving. Real sockets, the built CLI.
 */

const HEADERS_MS = 2_000
const REQUEST_MS = 4_000
/** What the server adds on top of a deadline: its checking interval (a tenth of 2 s). */
const CHECK_MS = 200
/** Scheduling on two loaded cores, 300 sockets answered in one sweep. */
const SLACK_MS = 1_500

const port = (url: string) => Number(new URL(url).port)

async function launch(env: Record<string, string>): Promise<Sidecar> {
  return startReady({
    env: gatewayEnv({
      HTTP_HEADER_TIMEOUT: `${HEADERS_MS}ms`,
      HTTP_REQUEST_TIMEOUT: `${REQUEST_MS}ms`,
      ...env,
    }),
  })
}

test('300 connections trickling bodies: a valid webhook still gets 201, each trickler a 408 at its deadline', async (t) => {
  const sc = await launch({ GATEWAY_MAX_INFLIGHT: '256' })
  t.after(() => stop(sc, 'SIGKILL'))
  const base = await sc.url('gateway')
  const tricklers = Array.from({ length: 300 }, () => slowClient({ port: port(base), mode: 'body' }))
  t.after(() => {
    for (const c of tricklers) c.socket.destroy()
  })
  await Promise.all(tricklers.map((c) => c.started))
  // Every trickler's headers are in: each one is now a request whose body is still arriving.
  await new Promise((r) => setTimeout(r, 300))

  const valid = await post(base, webhook([alert('ThroughTheCrowd')]))
  assert.equal(valid.status, 201, JSON.stringify(valid.body))
  const metrics = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
  assert.equal(metric(metrics, 'gateway_inflight_requests'), 0, 'a body still arriving holds no slot')

  const answers = await Promise.all(tricklers.map((c) => c.answer))
  const statuses = new Map<number, number>()
  for (const a of answers) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1)
  assert.deepEqual([...statuses], [[408, 300]], 'every trickler gets 408 Request Timeout')
  const latest = Math.max(...answers.map((a) => a.afterMs))
  const earliest = Math.min(...answers.map((a) => a.afterMs))
  assert.ok(earliest >= REQUEST_MS - 100, `a 408 came before the deadline: ${earliest.toFixed(0)}ms`)
  assert.ok(
    latest <= REQUEST_MS + CHECK_MS + SLACK_MS,
    `the last 408 came ${latest.toFixed(0)}ms after its request began`,
  )
  // The gateway is unharmed.
  assert.equal((await post(base, webhook([alert('AfterTheCrowd')]))).status, 201)
  assert.equal(await stop(sc), 0)
})

test('a slowloris on the headers gets 408 at HTTP_HEADER_TIMEOUT, on every server of the sidecar', async (t) => {
  const sc = await launch({ HEALTH_CHECK_ADDR: '127.0.0.1:0' })
  t.after(() => stop(sc, 'SIGKILL'))
  // The three at once: each is timed from its own start.
  const services = ['gateway', 'metrics', 'healthcheck']
  const clients = await Promise.all(
    services.map(async (service) => {
      const c = slowClient({ port: port(await sc.url(service)), mode: 'headers', path: '/' })
      t.after(() => c.socket.destroy())
      return c
    }),
  )
  for (const [i, service] of services.entries()) {
    const a = await clients[i]!.answer
    assert.equal(a.status, 408, service)
    assert.ok(
      a.afterMs >= HEADERS_MS - 100,
      `${service}: 408 before the deadline (${a.afterMs.toFixed(0)}ms)`,
    )
    assert.ok(
      a.afterMs <= HEADERS_MS + CHECK_MS + SLACK_MS,
      `${service}: 408 came ${a.afterMs.toFixed(0)}ms after the request began`,
    )
  }
  assert.equal(await stop(sc), 0)
})

test('HTTP_HEADER_TIMEOUT longer than HTTP_REQUEST_TIMEOUT, or 0: exit 2 naming the setting', async () => {
  for (const [env, name] of [
    [{ HTTP_HEADER_TIMEOUT: '40s' }, /invalid setting HTTP_HEADER_TIMEOUT: must not be longer than/],
    [{ HTTP_REQUEST_TIMEOUT: '0' }, /invalid setting HTTP_REQUEST_TIMEOUT: must be greater than 0/],
  ] as const) {
    const sc = startSidecar({ env })
    assert.equal((await sc.exited).code, 2)
    assert.match(sc.stderr(), name)
  }
})

/** A chunked webhook whose first `bytes` arrive at once, and whose end never does. */
function stalledBody(port: number, bytes: number): { socket: Socket; answer: Promise<string> } {
  const socket = connect({ host: '127.0.0.1', port })
  socket.write(
    'POST /api/v1/signals/prometheus HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n' +
      'transfer-encoding: chunked\r\n\r\n',
  )
  socket.write(`${bytes.toString(16)}\r\n${'['.padEnd(bytes, ' ')}\r\n`)
  let got = ''
  const answer = new Promise<string>((resolve) => {
    socket.on('data', (d) => {
      got += d
    })
    socket.once('close', () => resolve(got))
    socket.once('error', () => resolve(got))
  })
  return { socket, answer }
}

test('GATEWAY_MAX_BUFFERED_BYTES: stalled large bodies are shed with 503 to make room; a valid webhook still gets 201', async (t) => {
  const sc = await launch({ GATEWAY_MAX_BODY_BYTES: '1048576', GATEWAY_MAX_BUFFERED_BYTES: '2097152' })
  t.after(() => stop(sc, 'SIGKILL'))
  const base = await sc.url('gateway')
  const metricsUrl = `${await sc.url('metrics')}/metrics`
  const buffered = async () =>
    metric(await (await fetch(metricsUrl)).text(), 'gateway_body_bytes_buffered') ?? 0
  const KIB900 = 900 * 1024
  const first = stalledBody(port(base), KIB900)
  const second = stalledBody(port(base), KIB900)
  t.after(() => {
    first.socket.destroy()
    second.socket.destroy()
  })
  while ((await buffered()) < 2 * KIB900) await new Promise((r) => setTimeout(r, 20))
  // A third: 2.7 MiB would be held. The third makes room by shedding one of the two larger ones…
  const third = stalledBody(port(base), KIB900)
  t.after(() => third.socket.destroy())
  const shedAnswer = await Promise.race([first.answer, second.answer])
  assert.match(shedAnswer, /^HTTP\/1\.1 503 /)
  assert.match(shedAnswer, /retry-after: 1/i)
  assert.match(shedAnswer, /"detail":"the gateway holds 2097152 bytes of request bodies already; retry"/)
  // …and a small valid webhook finds room beside what is left.
  const valid = await post(base, webhook([alert('BesideTheStalled')]))
  assert.equal(valid.status, 201, JSON.stringify(valid.body))
  const text = await (await fetch(metricsUrl)).text()
  assert.equal(metric(text, 'gateway_bodies_shed_total'), 1)
  assert.ok((metric(text, 'gateway_body_bytes_buffered') ?? Number.NaN) <= 2 * 1024 * 1024)
})

test('GATEWAY_MAX_BUFFERED_BYTES below GATEWAY_MAX_BODY_BYTES: exit 2 naming the setting', async () => {
  const sc = startSidecar({
    env: gatewayEnv({ GATEWAY_MAX_BODY_BYTES: '1048576', GATEWAY_MAX_BUFFERED_BYTES: '1000' }),
  })
  assert.equal((await sc.exited).code, 2)
  assert.match(sc.stderr(), /invalid setting GATEWAY_MAX_BUFFERED_BYTES: must be 0 \(no limit\) or at least/)
})

test('a flood of connections to one port leaves the others their descriptors (HTTP_MAX_CONNECTIONS)', async (t) => {
  // 400 descriptors for the whole process: 50 connections a server by default.
  const sc = await startReady({
    env: gatewayEnv({
      HEALTH_CHECK_ADDR: '127.0.0.1:0',
      HTTP_HEADER_TIMEOUT: '60s',
      HTTP_REQUEST_TIMEOUT: '60s',
    }),
    command: (node, argv) => ({ file: 'sh', args: ['-c', 'ulimit -n 400 && exec "$0" "$@"', node, ...argv] }),
  })
  const flood: Socket[] = []
  t.after(() => {
    for (const s of flood) s.destroy()
  })
  try {
    const gateway = port(await sc.url('gateway'))
    // More than the process has descriptors: each sends half a request line and waits.
    await Promise.all(
      Array.from({ length: 450 }, async () => {
        const s = connect({ port: gateway, host: '127.0.0.1' })
        flood.push(s)
        s.on('error', () => {})
        await new Promise((r) => s.once('connect', r).once('close', r))
        if (!s.destroyed) s.write('POST /api/v1/signals/prometheus HT')
      }),
    )
    const full = await sc.waitForEvent('server.connections.full')
    assert.deepEqual([full.service, full.maxConnections], ['gateway', 50])
    // The probes and the scrape still connect and are answered.
    assert.equal((await fetch(`${await sc.url('healthcheck')}/healthz`)).status, 200)
    assert.equal((await fetch(`${await sc.url('healthcheck')}/readyz`)).status, 200)
    assert.equal((await fetch(`${await sc.url('metrics')}/metrics`)).status, 200)
  } finally {
    for (const s of flood) s.destroy()
    assert.equal(await stop(sc), 0)
  }
})
