import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { ORDER } from './support/lifecycle.js'
import { parsePromText, type Sample } from './support/prom-text.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'
import { sendUnterminated } from './support/unterminated.js'

const find = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))

test('/metrics is one Prometheus exposition with series from every worker and the main thread', async () => {
  const sc = await startReady()
  try {
    const res = await fetch(`${await sc.url('metrics')}/metrics`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
    const samples = parsePromText(await res.text())
    for (const service of ORDER) {
      assert.equal(find(samples, 'sia_worker_up', { service })[0]?.value, 1, `${service} up`)
      assert.equal(
        find(samples, 'sia_worker_tasks', { service }).length,
        1,
        `${service}'s own registry answered`,
      )
      assert.ok(
        (find(samples, 'sia_worker_heap_used_bytes', { service })[0]?.value ?? 0) > 0,
        `${service} heap`,
      )
      assert.ok(find(samples, 'sia_service_start_duration_seconds', { service }).length === 1)
    }
    assert.equal(
      find(samples, 'sia_worker_tasks', { service: 'token' })[0]?.value,
      2,
      'token runs server + refresh-timer',
    )
    // Process-wide metrics come once, from the main thread, without a service label.
    const rss = find(samples, 'process_resident_memory_bytes')
    assert.equal(rss.length, 1)
    assert.equal(rss[0]?.labels.service, undefined)
    assert.ok(find(samples, 'nodejs_heap_size_used_bytes').length === 1)
    // Made in supervisor/default-metrics.ts, not by prom-client: user + system = total, all > 0.
    const cpu = (name: string) => find(samples, name)[0]?.value ?? Number.NaN
    const [user, system, total] = ['user_', 'system_', ''].map((k) => cpu(`process_cpu_${k}seconds_total`))
    assert.ok(user! > 0 && system! >= 0, `process CPU counted: user ${user}, system ${system}`)
    assert.ok(Math.abs(user! + system! - total!) < 1e-3, `process_cpu_seconds_total ${total} = user + system`)
    assert.ok(find(samples, 'memory_report_rss_bytes', { service: 'memory-reporter' }).length === 1)
    // Counters an alert takes increase() of exist at 0 before their first step: Prometheus does
    // not see a series appear at 1 as an increase.
    for (const service of ORDER) {
      for (const reason of ['exception', 'oom', 'exit', 'watchdog', 'recycled']) {
        assert.equal(
          find(samples, 'sia_worker_restarts_total', { service, reason })[0]?.value,
          0,
          `${service} ${reason}`,
        )
      }
    }
    assert.equal(find(samples, 'gateway_sink_errors_total', { sink: 'file' })[0]?.value, 0)
    assert.equal(find(samples, 'gateway_signals_received_total', { status: 'firing' })[0]?.value, 0)
  } finally {
    assert.equal(await stop(sc), 0)
  }
})

test('a worker that is down is reported as sia_worker_up 0, never as a failed scrape', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-cfg-')), 'sia.yaml')
  writeFileSync(path, 'services:\n  memory-reporter:\n    restart: temporary\n')
  const sc = await startReady({
    env: { SIA_FAILPOINTS: 'memory-reporter.before-task:reporter=crash' },
    args: ['--config', path],
  })
  try {
    await sc.waitForEvent('worker.crashed', { service: 'memory-reporter' })
    const res = await fetch(`${await sc.url('metrics')}/metrics`)
    assert.equal(res.status, 200)
    const samples = parsePromText(await res.text())
    assert.equal(find(samples, 'sia_worker_up', { service: 'memory-reporter' })[0]?.value, 0)
    assert.equal(find(samples, 'sia_worker_up', { service: 'token' })[0]?.value, 1)
    // A temporary worker is never restarted: its crash shows as up 0, not as a restart.
    assert.equal(
      find(samples, 'sia_worker_restarts_total', { service: 'memory-reporter', reason: 'exception' })[0]
        ?.value,
      0,
    )
  } finally {
    await stop(sc)
  }
})

test('a worker that stays down has no heap or loop series, here or in the memory report; RSS is read at the scrape', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-cfg-')), 'sia.yaml')
  writeFileSync(path, 'services:\n  gateway:\n    restart: temporary\n')
  const sc = await startReady({
    // No report is ever logged: the gauges must not wait for one.
    env: { SIA_FAILPOINTS: 'gateway.before-task:server=crash', MEMORY_REPORT_INTERVAL: '0' },
    args: ['--config', path],
  })
  try {
    await sc.waitForEvent('worker.down', { service: 'gateway' })
    const samples = parsePromText(await (await fetch(`${await sc.url('metrics')}/metrics`)).text())
    assert.equal(find(samples, 'sia_worker_up', { service: 'gateway' })[0]?.value, 0)
    for (const name of [
      'sia_worker_heap_used_bytes',
      'sia_worker_heap_limit_bytes',
      'sia_worker_event_loop_utilization',
      'sia_worker_heartbeat_age_seconds',
    ]) {
      assert.deepEqual(find(samples, name, { service: 'gateway' }), [], `${name} of a thread that is gone`)
      assert.ok((find(samples, name, { service: 'token' })[0]?.value ?? -1) >= 0, `${name} of token`)
    }
    assert.deepEqual(find(samples, 'memory_report_heap_used_bytes', { worker: 'gateway' }), [])
    assert.ok((find(samples, 'memory_report_heap_used_bytes', { worker: 'token' })[0]?.value ?? 0) > 0)
    assert.ok((find(samples, 'memory_report_heap_limit_bytes', { worker: 'token' })[0]?.value ?? 0) > 0)
    assert.ok((find(samples, 'memory_report_rss_bytes')[0]?.value ?? 0) > 10e6, 'RSS before any report')
    assert.deepEqual(sc.events('memory.report'), [])
  } finally {
    await stop(sc)
  }
})

test('memory reporter logs RSS and each worker heap every MEMORY_REPORT_INTERVAL', async () => {
  const sc = await startReady({ env: { MEMORY_REPORT_INTERVAL: '200ms' } })
  try {
    const r = await sc.waitForEvent('memory.report')
    assert.equal(r.service, 'memory-reporter')
    assert.ok((r.rssBytes as number) > 10e6)
    const workers = r.workers as { worker: string; heapUsedBytes: number; heapLimitBytes: number }[]
    assert.deepEqual(
      workers.map((w) => w.worker),
      ORDER,
    )
    for (const w of workers)
      assert.ok(w.heapUsedBytes > 0 && w.heapLimitBytes > w.heapUsedBytes, JSON.stringify(w))
  } finally {
    await stop(sc)
  }
})

/** One raw request (`method target`) on its own connection: its status code and what followed the head. */
function raw(
  base: string,
  target: string,
  method = 'GET',
): Promise<{ status: number; head: string; body: string }> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () =>
      socket.write(`${method} ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    )
    let text = ''
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => {
      text += d
    })
    socket.on('close', () => {
      const code = /^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]
      const end = text.indexOf('\r\n\r\n')
      if (code && end >= 0)
        resolve({ status: Number(code), head: text.slice(0, end), body: text.slice(end + 4) })
      else reject(new Error(`no answer to ${method} ${target}: ${JSON.stringify(text.slice(0, 80))}`))
    })
    socket.on('error', reject)
  })
}

test('one write of 2,000 pipelined requests: at most 33 answered (17, then 16 refused), the connection ended, no thread out of heap', async () => {
  const sc = await startReady()
  try {
    for (const [service, path] of [
      ['metrics', '/metrics'],
      ['healthcheck', '/readyz'],
      ['token', '/'],
    ] as const) {
      const { port } = new URL(await sc.url(service))
      const socket = connect(Number(port), '127.0.0.1')
      socket.on('error', () => {})
      let answered = 0
      socket.on('data', (d: Buffer) => {
        answered += d.toString('latin1').split('HTTP/1.1 ').length - 1
      })
      socket.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`.repeat(2000))
      await new Promise((resolve) => socket.once('close', resolve))
      assert.ok(answered <= 33, `${service}: ${answered} answers`)
    }
    // Nothing ended for it: the metrics thread (which answers every scrape from every thread's
    // registry) scrapes as before.
    await new Promise((r) => setTimeout(r, 1500))
    assert.deepEqual(sc.events('worker.crashed'), [])
    assert.equal((await fetch(`${await sc.url('metrics')}/metrics`)).status, 200)
  } finally {
    assert.equal(await stop(sc), 0)
  }
})

test('a flood of scrapes over 300 connections shares one gather at a time: every one answered, the metrics thread lives', async () => {
  // Each scrape gathered on its own: 4,800 gathers at once, every thread's registry held for each,
  // answered late (503) or not at all (a thread out of heap with 2,000 in one connection).
  const sc = await startReady({ env: { HTTP_MAX_CONNECTIONS: '400' } })
  try {
    const { port } = new URL(await sc.url('metrics'))
    const answers = await Promise.all(
      Array.from(
        { length: 300 },
        () =>
          new Promise<number>((resolve) => {
            const socket = connect(Number(port), '127.0.0.1')
            let text = ''
            socket.setEncoding('latin1')
            socket.on('data', (d: string) => {
              text += d
            })
            socket.on('error', () => {})
            socket.on('close', () => resolve(text.split('HTTP/1.1 200 OK').length - 1))
            // 16 at once (the most a connection may have waiting), the last one closing.
            socket.write(
              'GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n'.repeat(15) +
                'GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n',
            )
          }),
      ),
    )
    assert.deepEqual(sc.events('worker.crashed'), [])
    assert.deepEqual(new Set(answers), new Set([16]), 'every scrape answered 200')
  } finally {
    assert.equal(await stop(sc), 0)
  }
})

test('a flood of /status.json over 900 connections that never read: one view built for all, the metrics thread lives', async () => {
  // Built per request, 14,400 views at once ended the thread out of heap (and repeated floods, the
  // sidecar: a crash loop).
  const sc = await startReady({ env: { HTTP_MAX_CONNECTIONS: '1000' } })
  const sockets: ReturnType<typeof connect>[] = []
  try {
    const base = await sc.url('metrics')
    const { port } = new URL(base)
    for (let i = 0; i < 900; i++) {
      const socket = connect(Number(port), '127.0.0.1')
      socket.on('error', () => {})
      socket.pause() // never reads: every answer waits in the server
      socket.write('GET /status.json HTTP/1.1\r\nhost: x\r\n\r\n'.repeat(16))
      sockets.push(socket)
    }
    // Answered with the flood's view, or the next: the flood has been served by then.
    const probe = await fetch(`${base}/status.json`)
    assert.equal(probe.status, 200)
    assert.ok(Array.isArray(((await probe.json()) as { workers?: unknown }).workers))
    assert.deepEqual(sc.events('worker.crashed'), [])
  } finally {
    for (const socket of sockets) socket.destroy()
    assert.equal(await stop(sc), 0)
  }
})

/**
 * `request` written raw to `base`'s port: the status of every answer, and all the text that came
 * back, until the server closes the connection or `ms` pass.
 */
async function exchange(
  base: string,
  request: string,
  ms = 5000,
  halfClose = false,
): Promise<{ statuses: string[]; text: string }> {
  const socket = connect(Number(new URL(base).port), '127.0.0.1')
  let text = ''
  socket.setEncoding('latin1').on('data', (d: string) => {
    text += d
  })
  socket.on('error', () => {})
  socket.write(request, 'latin1') // byte for byte: a test may send bytes that are not UTF-8
  if (halfClose) socket.end() // done sending; still reading
  await Promise.race([new Promise((r) => socket.once('close', r)), new Promise((r) => setTimeout(r, ms))])
  socket.destroy()
  return { statuses: [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]!), text }
}

const PIPELINED_WEBHOOK = JSON.stringify({
  version: '4',
  status: 'firing',
  receiver: 'r',
  groupKey: '{}',
  alerts: [{ status: 'firing', labels: { alertname: 'Pipelined' }, annotations: {} }],
})

/**
 * The protocol edges of every server, on one sidecar: each test leaves it serving, and the last
 * checks that no thread ended and the sidecar stops clean.
 */
describe('every server, one sidecar: request targets, methods, framing, pipelining', () => {
  let sc: Sidecar
  before(async () => {
    sc = await startReady()
  })
  after(async () => {
    assert.deepEqual(sc.events('worker.crashed'), [])
    assert.equal(await stop(sc), 0)
  })

  test('request targets Node accepts but no URL parser likes get a 4xx on every port, and no thread ends', async () => {
    for (const service of ['metrics', 'healthcheck', 'token', 'gateway']) {
      const base = await sc.url(service)
      for (const target of ['//', 'http://a:99999/', '/%zz', '*']) {
        const { status } = await raw(base, target)
        assert.ok(status >= 400 && status < 500, `${service} ${target}: ${status}`)
      }
    }
    assert.deepEqual(sc.events('worker.crashed'), [])
    assert.equal((await fetch(`${await sc.url('healthcheck')}/readyz`)).status, 200)
  })

  test('the health and metrics ports answer GET and HEAD only, refuse the rest with a problem body, and take absolute-form targets', async () => {
    const health = await sc.url('healthcheck')
    const metrics = await sc.url('metrics')
    const problem = (r: { status: number; head: string; body: string }, status: number, what: string) => {
      assert.equal(r.status, status, what)
      assert.match(r.head, /content-type: application\/problem\+json/i, what)
      assert.equal((JSON.parse(r.body) as { status: number }).status, status, what)
    }
    for (const method of ['POST', 'DELETE', 'PUT']) {
      for (const [base, path] of [
        [health, '/healthz'],
        [health, '/readyz'],
        [metrics, '/metrics'],
        [metrics, '/status'],
      ] as const) {
        const r = await raw(base, path, method)
        problem(r, 405, `${method} ${path}`)
        assert.match(r.head, /allow: GET, HEAD/i, `${method} ${path}`)
      }
    }
    problem(await raw(health, '/nowhere'), 404, 'GET /nowhere on the health port')
    // RFC 9112 §3.2.2: a server accepts a request target in absolute form.
    assert.equal((await raw(health, 'http://localhost/readyz')).status, 200)
    assert.equal((await raw(health, 'http://localhost/healthz?probe=1')).status, 200)
    const scrape = await raw(metrics, 'http://localhost/metrics')
    assert.equal(scrape.status, 200)
    assert.match(scrape.body, /sia_worker_up/)
    // A body sent anyway is not read: the answer closes the connection (Node would read all of
    // it, to the read deadline).
    const total = 64 * 1024 * 1024
    for (const [base, line] of [
      [health, 'GET /healthz'],
      [health, 'POST /readyz'],
      [metrics, 'GET /metrics'],
    ] as const) {
      const r = await sendUnterminated(base, total, `${line} HTTP/1.1\r\nhost: x\r\n`)
      assert.match(r.head, /connection: close/i, line)
      assert.ok(r.sent < total, `${line}: answered before the body was sent (${r.sent} bytes)`)
    }
    assert.deepEqual(sc.events('worker.crashed'), [])
  })

  test('18 requests pipelined in one write: 17 answered, the 18th refused with 503 and the connection closed; no work lost', async () => {
    // The 18th ended the connection: the 17 answers already made, webhooks stored among them, went
    // unsent.
    // Scrapes: each answer waits for its gather, so all 18 are read behind the first. (A probe
    // answered at once may be sent before the next is read: then no queue to refuse.)
    const scrapes = await exchange(
      await sc.url('metrics'),
      'GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n'.repeat(18),
    )
    assert.deepEqual(scrapes.statuses, [...Array(17).fill('200'), '503'])
    // `close`: the last request of its connection, which then ends with the answer.
    const hook = (i: number, close = false) => {
      const body = PIPELINED_WEBHOOK.replace('"Pipelined"', `"Pipelined${i}"`)
      return `POST /api/v1/signals/prometheus HTTP/1.1\r\nhost: x\r\n${close ? 'connection: close\r\n' : ''}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
    }
    const base = await sc.url('gateway')
    const hooks = await exchange(base, Array.from({ length: 18 }, (_, i) => hook(i)).join(''))
    assert.deepEqual(hooks.statuses, [...Array(17).fill('201'), '503'])
    assert.match(hooks.text, /retry-after: 0/i)
    // The refused one was not taken: sent again, it is new.
    assert.deepEqual((await exchange(base, hook(17, true))).statuses, ['201'])
  })

  test('a body in a transfer coding other than chunked alone is 501 on every server, not read as if plain', async () => {
    // `gzip, chunked`: Node takes the chunked framing off and handed the gzip on as the body.
    for (const service of ['token', 'gateway', 'metrics', 'healthcheck']) {
      const { statuses, text } = await exchange(
        await sc.url(service),
        'POST /api/v1/signals/prometheus HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
        1500,
      )
      assert.deepEqual(statuses, ['501'], service)
      assert.match(text, /content-type: application\/problem\+json/i)
      assert.match(text, /only chunked is served/)
    }
  })

  test('a body that is not UTF-8 is 400 on the gateway and the token server, not stored with U+FFFD', async () => {
    const body = PIPELINED_WEBHOOK.replace('"Pipelined"', '"Bin\xff"')
    const asks = {
      gateway: '/api/v1/signals/prometheus',
      token: '/accesstoken',
    }
    for (const [service, path] of Object.entries(asks)) {
      const bytes = Buffer.from(body, 'latin1') // 0xFF alone: no UTF-8 character
      const head = `POST ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${bytes.length}\r\n\r\n`
      const { statuses, text } = await exchange(await sc.url(service), head + bytes.toString('latin1'), 1500)
      assert.deepEqual(statuses, ['400'], service)
      assert.match(text, /not UTF-8/)
    }
  })

  test('a client that half-closes after its request still gets the answer, on every server', async () => {
    // Node's default ends the connection at the client's FIN: an answer not ready by then (a scrape,
    // a webhook stored) was never sent, the work done all the same.
    const hook = PIPELINED_WEBHOOK.replace('"Pipelined"', '"HalfClosed"') // new on this sidecar
    const webhook = `POST /api/v1/signals/prometheus HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(hook)}\r\n\r\n${hook}`
    const token = JSON.stringify({ domain: 'demo', role: 'half-closed' })
    const asks = {
      metrics: ['GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n', '200'],
      gateway: [webhook, '201'],
      token: [
        `POST /accesstoken HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(token)}\r\n\r\n${token}`,
        '200',
      ],
      healthcheck: ['GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n', '200'],
    }
    for (const [service, [request, status]] of Object.entries(asks)) {
      const { statuses } = await exchange(await sc.url(service), request!, 5000, true)
      assert.deepEqual(statuses, [status], service)
    }
  })

  test('a malformed request pipelined behind one still being answered: that one is answered first, then the 400', async () => {
    const ahead = PIPELINED_WEBHOOK.replace('"Pipelined"', '"AheadOfGarbage"') // new on this sidecar
    for (const service of ['metrics', 'gateway'] as const) {
      const first =
        service === 'metrics'
          ? 'GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n'
          : `POST /api/v1/signals/prometheus HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(ahead)}\r\n\r\n${ahead}`
      const { statuses, text } = await exchange(await sc.url(service), `${first}GARBAGE\r\n\r\n`)
      assert.deepEqual(statuses, [service === 'metrics' ? '200' : '201', '400'], service)
      assert.match(text, /content-type: application\/problem\+json/)
    }
  })

  test('CONNECT, an expectation other than 100-continue, no Host, and 100-continue on every server: problem bodies, and a 100 only before a body that is read', async () => {
    const send = async (service: string, request: string) => exchange(await sc.url(service), request, 1500)
    for (const service of ['token', 'gateway', 'metrics', 'healthcheck']) {
      const tunnel = await send(service, 'CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n')
      assert.deepEqual(tunnel.statuses, ['405'], `${service} CONNECT`)
      assert.match(tunnel.text, /application\/problem\+json/)
      const odd = await send(service, 'GET / HTTP/1.1\r\nhost: x\r\nexpect: something-else\r\n\r\n')
      assert.deepEqual(odd.statuses, ['417'], `${service} Expect: something-else`)
      assert.match(odd.text, /application\/problem\+json/)
      // HTTP/1.1 with no Host: 400 as a problem body, before any handler (a body left unread);
      // HTTP/1.0 needs none.
      const hostless = await send(service, 'POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n{"a":')
      assert.deepEqual(hostless.statuses, ['400'], `${service} no Host`)
      assert.match(hostless.text, /content-type: application\/problem\+json/i)
      assert.match(hostless.text, /connection: close/i)
      assert.match(hostless.text, /must have a Host header/)
      const old = await send(service, 'GET /nowhere HTTP/1.0\r\n\r\n')
      assert.equal(old.statuses.length, 1, `${service} HTTP/1.0 without Host answered`)
      assert.doesNotMatch(old.text, /Host header/, `${service} HTTP/1.0 needs no Host`)
    }
    // A body no one will read is not invited: no 100, the refusal, the connection closed.
    for (const service of ['metrics', 'healthcheck']) {
      const refused = await send(
        service,
        'POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n',
      )
      assert.deepEqual(refused.statuses, ['405'], `${service} POST with Expect: 100-continue`)
      assert.match(refused.text, /connection: close/i)
    }
    // One that is read is: the 100, then the answer once the body came.
    const body = JSON.stringify({ domain: 'demo', role: 'reader' })
    const { port } = new URL(await sc.url('token'))
    const socket = connect(Number(port), '127.0.0.1')
    let text = ''
    let sent = false
    socket.setEncoding('latin1').on('data', (d: string) => {
      text += d
      if (text.startsWith('HTTP/1.1 100 Continue\r\n\r\n') && !sent) {
        sent = true
        socket.write(body)
      }
    })
    socket.write(
      `POST /accesstoken HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n`,
    )
    await new Promise((r) => socket.once('close', r))
    assert.deepEqual(
      [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]),
      ['100', '200'],
    )
  })
})
