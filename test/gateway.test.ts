import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { gzipSync } from 'node:zlib'
import {
  alert,
  FIXTURE,
  gatewayEnv,
  metric,
  post,
  readJsonLines,
  SIGNALS,
  webhook,
} from './support/gateway.js'
import { type Sidecar, startReady, startSidecar, stop } from './support/sidecar.js'
import { sendUnterminated } from './support/unterminated.js'

const TOKEN = 'gw-test-token-3f9a'
const AUTH = { authorization: `Bearer ${TOKEN}` }
/** Asks for one entry per alert in the answer. */
const DETAIL = `${SIGNALS}?detail=1`

/** A webhook request's head, for sendUnterminated. */
const webhookHead = (auth = `authorization: Bearer ${TOKEN}\r\n`, line = `POST ${SIGNALS}`) =>
  `${line} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${auth}`

/**
 * Writes `parts` on one connection, each once the server has answered something (or at once for
 * the first), and returns all it answered until it closes the connection or 2 s pass in silence.
 */
function exchange(base: string, parts: string[]): Promise<string> {
  const { port } = new URL(base)
  return new Promise((resolve) => {
    const socket = connect(Number(port), '127.0.0.1')
    let answer = ''
    let quiet: NodeJS.Timeout | undefined
    const done = () => {
      clearTimeout(quiet)
      socket.destroy()
      resolve(answer)
    }
    const rest = [...parts]
    socket.on('error', () => {})
    socket.on('connect', () => socket.write(rest.shift()!))
    socket.on('data', (d) => {
      answer += d.toString()
      if (rest.length > 0) socket.write(rest.shift()!)
      clearTimeout(quiet)
      quiet = setTimeout(done, 2000)
    })
    socket.on('close', done)
  })
}

describe('gateway: memory dedup, file sink, bearer auth', () => {
  let sc: Sidecar
  let base: string
  let metricsUrl: string
  let sinkFile: string

  before(async () => {
    sc = await startReady({ env: gatewayEnv({ GATEWAY_AUTH_TOKEN: TOKEN }) })
    base = await sc.url('gateway')
    metricsUrl = `${await sc.url('metrics')}/metrics`
    sinkFile = join(sc.dataDir, 'alerts.jsonl')
  })
  after(async () => {
    assert.equal(await stop(sc), 0)
    assert.deepEqual(sc.junk, [])
    assert.ok(!sc.records.some((r) => JSON.stringify(r).includes(TOKEN)), 'the token never appears in logs')
  })

  test('the AlertManager fixture: 201 with every alert, then 202 as duplicates', async () => {
    const first = await post(base, FIXTURE, AUTH, DETAIL)
    assert.equal(first.status, 201)
    assert.equal(first.headers.get('content-type'), 'application/json')
    assert.deepEqual(
      { created: first.body.created, duplicates: first.body.duplicates },
      { created: 2, duplicates: 0 },
    )
    assert.deepEqual(
      (first.body.alerts as { fingerprint: string; status: string; alertStatus: string }[]).map((a) => [
        a.fingerprint,
        a.alertStatus,
        a.status,
      ]),
      [
        ['5f1e2c3d4b5a6978', 'firing', 'created'],
        ['0a1b2c3d4e5f6071', 'resolved', 'created'],
      ],
    )
    const lines = readJsonLines(sinkFile)
    assert.equal(lines.length, 2)
    assert.deepEqual(lines[0], {
      fingerprint: '5f1e2c3d4b5a6978',
      alertname: 'KubePodCrashLooping',
      status: 'firing',
      severity: 'warning',
      namespace: 'payments',
      labels: {
        alertname: 'KubePodCrashLooping',
        namespace: 'payments',
        pod: 'api-7d9f8-abcde',
        severity: 'warning',
      },
      annotations: { summary: 'Pod payments/api-7d9f8-abcde is crash looping' },
      startsAt: '2025-10-30T10:00:00Z',
      endsAt: '0001-01-01T00:00:00Z',
      generatorURL:
        'http://prometheus.monitoring:9090/graph?g0.expr=kube_pod_container_status_restarts_total',
      receiver: 'sia-gateway',
      receivedAt: lines[0]!.receivedAt,
    })
    assert.ok(!Number.isNaN(Date.parse(lines[0]!.receivedAt as string)))
    assert.equal(lines[1]!.status, 'resolved')

    const compact = await post(base, FIXTURE, AUTH)
    assert.equal(compact.status, 202)
    assert.deepEqual(compact.body, { created: 0, duplicates: 2, ignored: 0 }, 'no per-alert detail unasked')
    const again = await post(base, FIXTURE, AUTH, DETAIL)
    assert.equal(again.status, 202)
    assert.deepEqual([again.body.created, again.body.duplicates], [0, 2])
    const counts = (again.body.alerts as { count: number; firstSeen: number; lastSeen: number }[])[0]!
    assert.equal(counts.count, 3)
    assert.ok(counts.lastSeen >= counts.firstSeen)
    assert.equal(readJsonLines(sinkFile).length, 2, 'duplicates are not written')
  })

  test('a batch of 50 with 10 repeats: 40 created, 10 duplicates, 40 lines', async () => {
    const before = readJsonLines(sinkFile).length
    const alerts = Array.from({ length: 50 }, (_, i) => alert(`Batch${i % 40}`))
    const r = await post(base, webhook(alerts), AUTH, DETAIL)
    assert.equal(r.status, 201)
    assert.deepEqual([r.body.created, r.body.duplicates], [40, 10])
    const statuses = (r.body.alerts as { status: string }[]).map((a) => a.status)
    assert.deepEqual(statuses.slice(40), Array(10).fill('duplicate'))
    assert.equal(readJsonLines(sinkFile).length - before, 40)
  })

  test('alerts AlertManager left out (truncatedAlerts) are said: answer, counter, one log line a minute', async () => {
    const scrape = async () => (await fetch(metricsUrl)).text()
    assert.equal(metric(await scrape(), 'gateway_signals_truncated_total', { service: 'gateway' }), 0)
    const cut = (n: number, name: string) => ({
      ...webhook([alert(name)]),
      groupKey: '{}:{team="a"}',
      truncatedAlerts: n,
    })
    const first = await post(base, cut(5, 'TruncatedGroup1'), AUTH)
    assert.equal(first.status, 201)
    assert.deepEqual(first.body, { created: 1, duplicates: 0, ignored: 0, truncated: 5 })
    const second = await post(base, cut(2, 'TruncatedGroup2'), AUTH)
    assert.deepEqual([second.status, second.body.truncated], [201, 2])
    const whole = await post(base, { ...webhook([alert('WholeGroup')]), truncatedAlerts: 0 }, AUTH)
    assert.deepEqual(whole.body, { created: 1, duplicates: 0, ignored: 0 })
    assert.equal(metric(await scrape(), 'gateway_signals_truncated_total', { service: 'gateway' }), 7)
    const said = sc.events('gateway.alerts.truncated')
    assert.equal(said.length, 1, 'once a minute at most')
    assert.deepEqual([said[0]?.count, said[0]?.groupKey, said[0]?.level], [5, '{}:{team="a"}', 'warn'])
  })

  test('resolved is recorded as the resolution of the same fingerprint', async () => {
    const firing = alert('Resolves', { fingerprint: 'ab12cd34ef56ab78' })
    assert.equal((await post(base, webhook([firing]), AUTH)).status, 201)
    const resolved = await post(base, webhook([{ ...firing, status: 'resolved' }]), AUTH)
    assert.equal(resolved.status, 201)
    assert.equal((await post(base, webhook([{ ...firing, status: 'resolved' }]), AUTH)).status, 202)
    const mine = readJsonLines(sinkFile).filter((l) => l.fingerprint === 'ab12cd34ef56ab78')
    assert.deepEqual(
      mine.map((l) => l.status),
      ['firing', 'resolved'],
    )
  })

  test('without an AlertManager fingerprint: a hash of the sorted label set', async () => {
    const a = alert('NoPrint', { labels: { pod: 'p1', zone: 'a' } })
    const reordered = { ...a, labels: Object.fromEntries(Object.entries(a.labels).reverse()) }
    const r1 = await post(base, webhook([a]), AUTH, DETAIL)
    const r2 = await post(base, webhook([reordered]), AUTH, DETAIL)
    const r3 = await post(
      base,
      webhook([alert('NoPrint', { labels: { pod: 'p2', zone: 'a' } })]),
      AUTH,
      DETAIL,
    )
    assert.deepEqual([r1.status, r2.status, r3.status], [201, 202, 201])
    const fp = (r: typeof r1) => (r.body.alerts as { fingerprint: string }[])[0]!.fingerprint
    assert.equal(fp(r1), fp(r2))
    assert.notEqual(fp(r1), fp(r3))
    assert.match(fp(r1), /^[0-9a-f]{32}$/)
  })

  test('labels named __proto__ and constructor are kept, stored and fingerprinted', async () => {
    // Written as JSON text: a JS object literal would turn "__proto__" into a prototype.
    const labels = '{"alertname":"Proto","__proto__":"polluted","constructor":"ctor"}'
    const payload = `{"version":"4","receiver":"sia","alerts":[{"status":"firing","labels":${labels}}]}`
    const r = await post(base, payload, AUTH, DETAIL)
    assert.equal(r.status, 201)
    const pairs = Object.entries(JSON.parse(labels) as Record<string, string>)
    assert.equal(pairs.length, 3)
    const sorted = [...pairs].sort(([a], [b]) => (a < b ? -1 : 1))
    const expected = createHash('sha256').update(JSON.stringify(sorted)).digest('hex').slice(0, 32)
    assert.equal((r.body.alerts as { fingerprint: string }[])[0]!.fingerprint, expected)
    const stored = readJsonLines(sinkFile).find((l) => l.alertname === 'Proto')!
    assert.deepEqual(Object.entries(stored.labels as object), pairs, 'every label, as sent')
    // The same alert without those labels is another alert, not a duplicate of this one.
    const plain = await post(base, webhook([{ status: 'firing', labels: { alertname: 'Proto' } }]), AUTH)
    assert.equal(plain.status, 201)
  })

  test('400 problem+json names the JSON path of the problem', async () => {
    const cases: [unknown, string][] = [
      ['{"alerts": [', '$'],
      [webhook([]), '$.alerts'],
      [{ version: '4' }, '$.alerts'],
      [webhook([alert('A'), { ...alert('B'), status: 'bogus' as 'firing' }]), '$.alerts[1].status'],
      [
        webhook([{ ...alert('C'), labels: { alertname: 'C', replicas: 3 as unknown as string } }]),
        '$.alerts[0].labels.replicas',
      ],
      [{ ...webhook([alert('D')]), truncatedAlerts: 'many' }, '$.truncatedAlerts'],
      ['[]', '$'],
      [{ ...webhook([alert('E')]), version: '3' }, '$.version'],
      [{ ...webhook([alert('F')]), version: 4 }, '$.version'],
      [{ ...webhook([alert('G')]), version: undefined }, '$.version'],
      [
        webhook([{ ...alert('H'), labels: 'alertname=H' as unknown as Record<string, string> }]),
        '$.alerts[0].labels',
      ],
    ]
    for (const [payload, path] of cases) {
      const r = await post(base, payload, AUTH)
      assert.equal(r.status, 400, JSON.stringify(payload))
      assert.equal(r.headers.get('content-type'), 'application/problem+json')
      assert.equal(r.body.title, 'Bad Request')
      assert.equal(r.body.path, path, JSON.stringify(r.body))
      assert.match(String(r.body.detail), /\S/)
    }
  })

  test('413 for a declared 5 MiB body, answered at once', async () => {
    const r = await post(base, Buffer.alloc(5 * 1024 * 1024, 'a'), AUTH)
    assert.equal(r.status, 413)
    assert.equal(r.headers.get('content-type'), 'application/problem+json')
    assert.equal(r.body.status, 413)
  })

  test('413 for a chunked body past the limit: the server stops reading and closes', {
    timeout: 10_000,
  }, async () => {
    // Far more than loopback socket buffers hold: a server that stops reading stalls the client
    // long before the end, whatever the machine's load; one that keeps reading takes it all.
    const total = 64 * 1024 * 1024
    const r = await sendUnterminated(base, total, webhookHead())
    assert.match(r.head, /^HTTP\/1\.1 413 /)
    assert.match(r.head, /connection: close/i)
    assert.equal(JSON.parse(r.body).title, 'Payload Too Large')
    assert.ok(r.sent < total, `answered before the body was sent (${r.sent} bytes)`)
  })

  test('answered before its body is read (401, 415, /ready, 404): the body is not read, the connection closed', {
    timeout: 10_000,
  }, async () => {
    // As the 413 above: a server that read and discarded the body would take all of it, then
    // hold the connection until its read deadline (30 s).
    const total = 64 * 1024 * 1024
    for (const [head, status] of [
      [webhookHead(''), 401],
      [webhookHead(`authorization: Bearer ${TOKEN}\r\ncontent-encoding: gzip\r\n`), 415],
      [webhookHead('', 'GET /ready'), 200],
      [webhookHead('', 'POST /nowhere'), 404],
    ] as const) {
      const r = await sendUnterminated(base, total, head)
      assert.match(r.head, new RegExp(`^HTTP/1\\.1 ${status} `))
      assert.match(r.head, /connection: close/i)
      assert.ok(r.sent < total, `answered before the body was sent (${r.sent} bytes)`)
    }
  })

  test('Expect: 100-continue: the 100 only once auth, type and size are checked', async () => {
    const body = JSON.stringify(webhook([alert('Continued')]))
    const head = (auth: string) =>
      `POST ${SIGNALS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${auth}` +
      `content-length: ${body.length}\r\nexpect: 100-continue\r\n\r\n`
    const refused = await exchange(base, [head('')])
    assert.match(refused, /^HTTP\/1\.1 401 /, 'no 100 Continue before the 401')
    const tooBig = await exchange(base, [
      head(`authorization: Bearer ${TOKEN}\r\n`).replace(`${body.length}`, `${50 * 1024 * 1024}`),
    ])
    assert.match(tooBig, /^HTTP\/1\.1 413 /)
    const ok = await exchange(base, [head(`authorization: Bearer ${TOKEN}\r\nconnection: close\r\n`), body])
    assert.match(ok, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 /)
  })

  test('a compressed body or another charset: 415 naming what to send', async () => {
    const zipped = await post(base, gzipSync(JSON.stringify(webhook([alert('Zipped')]))), {
      ...AUTH,
      'content-encoding': 'gzip',
    })
    assert.equal(zipped.status, 415)
    assert.match(zipped.body.detail as string, /content-encoding gzip is not supported/)
    const utf16 = await post(base, webhook([alert('Wide')]), {
      ...AUTH,
      'content-type': 'application/json; charset=utf-16',
    })
    assert.equal(utf16.status, 415)
    assert.match(utf16.body.detail as string, /send UTF-8/)
    const plain = await post(base, webhook([alert('Plain')]), {
      ...AUTH,
      'content-type': 'application/json; charset="UTF-8"',
      'content-encoding': 'identity',
    })
    assert.equal(plain.status, 201)
    for (const charset of ['utf8', 'US-ASCII']) {
      const r = await post(base, webhook([alert(`Label${charset}`)]), {
        ...AUTH,
        'content-type': `application/json;charset=${charset}`,
      })
      assert.equal(r.status, 201, charset)
    }
  })

  test('the absolute form of the target (RFC 9112 §3.2.2) is served, its query too', async () => {
    const body = JSON.stringify(webhook([alert('Absolute')]))
    const answer = await exchange(base, [
      `POST http://gateway.local${DETAIL} HTTP/1.1\r\nhost: gateway.local\r\ncontent-type: application/json\r\n` +
        `authorization: Bearer ${TOKEN}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
    ])
    assert.match(answer, /^HTTP\/1\.1 201 /)
    assert.equal((JSON.parse(answer.split('\r\n\r\n')[1]!) as { alerts: unknown[] }).alerts.length, 1)
  })

  test("what Node's parser refuses is a problem body too: 400, 431", async () => {
    const bad = await exchange(base, [`POST ${SIGNALS} HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n`])
    assert.match(bad, /^HTTP\/1\.1 400 Bad Request\r\n/)
    assert.match(bad, /content-type: application\/problem\+json/)
    assert.equal((JSON.parse(bad.split('\r\n\r\n')[1]!) as { status: number }).status, 400)
    const big = await exchange(base, [
      `GET /ready HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`,
    ])
    assert.match(big, /^HTTP\/1\.1 431 /)
    assert.equal((JSON.parse(big.split('\r\n\r\n')[1]!) as { status: number }).status, 431)
  })

  test('415 when the body is not JSON', async () => {
    const r = await post(base, 'hello', { ...AUTH, 'content-type': 'text/plain' })
    assert.equal(r.status, 415)
    assert.equal(r.headers.get('content-type'), 'application/problem+json')
    const missing = await fetch(`${base}${SIGNALS}`, {
      method: 'POST',
      headers: AUTH,
      body: new Uint8Array(2),
    })
    assert.equal(missing.status, 415)
    const suffixed = await post(base, FIXTURE, {
      ...AUTH,
      'content-type': 'application/vnd.am+json; charset=utf-8',
    })
    assert.equal(suffixed.status, 202)
  })

  test('401 without the right bearer token', async () => {
    for (const headers of [
      {} as Record<string, string>,
      { authorization: 'Bearer wrong' },
      { authorization: TOKEN },
      { authorization: 'Basic x' },
    ]) {
      const r = await post(base, FIXTURE, headers)
      assert.equal(r.status, 401, JSON.stringify(headers))
      assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="sia-gateway"')
      assert.equal(r.headers.get('content-type'), 'application/problem+json')
    }
    assert.equal((await post(base, FIXTURE, { authorization: `bearer ${TOKEN}` })).status, 202)
  })

  test('404 and 405', async () => {
    const nf = await fetch(`${base}/api/v1/signals/other`, { method: 'POST' })
    assert.equal(nf.status, 404)
    assert.equal(nf.headers.get('content-type'), 'application/problem+json')
    const get = await fetch(`${base}${SIGNALS}`)
    assert.equal(get.status, 405)
    assert.equal(get.headers.get('allow'), 'POST')
    const postReady = await fetch(`${base}/ready`, { method: 'POST' })
    assert.equal(postReady.status, 405)
    assert.equal(postReady.headers.get('allow'), 'GET, HEAD')
  })

  test('/ready on the gateway port mirrors the process readiness', async () => {
    const r = await fetch(`${base}/ready`)
    assert.equal(r.status, 200)
    const body = (await r.json()) as { status: string; phase: string }
    assert.deepEqual([body.status, body.phase], ['ready', 'running'])
  })

  test('metrics: gateway_* series count what happened', async () => {
    const scrape = async () => (await fetch(metricsUrl)).text()
    const m0 = await scrape()
    const fresh = alert('Metered', { status: 'resolved' })
    assert.equal((await post(base, webhook([fresh, fresh]), AUTH)).status, 201)
    assert.equal((await post(base, '{', AUTH)).status, 400)
    const m1 = await scrape()
    const delta = (name: string, labels?: Record<string, string>) =>
      (metric(m1, name, labels) ?? 0) - (metric(m0, name, labels) ?? 0)
    assert.equal(delta('gateway_signals_received_total', { status: 'resolved' }), 2)
    assert.equal(delta('gateway_signals_created_total'), 1)
    assert.equal(delta('gateway_signals_deduplicated_total'), 1)
    assert.equal(delta('gateway_requests_total', { code: '201' }), 1)
    assert.equal(delta('gateway_requests_total', { code: '400' }), 1)
    assert.equal(delta('gateway_request_duration_seconds_count'), 2)
    assert.equal(metric(m1, 'gateway_inflight_requests', { service: 'gateway' }), 0)
    assert.equal(metric(m1, 'gateway_dedup_store_up', { service: 'gateway' }), 1)
  })
})

describe('gateway: failing sink, fingerprint labels, resolved ignored', () => {
  let sc: Sidecar
  let base: string

  before(async () => {
    sc = await startReady({
      env: gatewayEnv({
        GATEWAY_SINK_FILE: '/dev/full', // every write fails with ENOSPC
        GATEWAY_FINGERPRINT_LABELS: 'alertname,namespace',
        GATEWAY_RECORD_RESOLVED: 'false',
      }),
    })
    base = await sc.url('gateway')
  })
  after(async () => {
    assert.equal(await stop(sc), 0)
  })

  test('a failed sink write is rolled back: 503 + Retry-After, and the retry is new again', async () => {
    for (let i = 0; i < 2; i++) {
      // AlertManager left alerts out, too: not counted while the notification is not taken (its
      // retry carries the same count).
      const r = await post(base, { ...webhook([alert('Lost')]), truncatedAlerts: 4 }, {})
      assert.equal(r.status, 503, 'a duplicate (202) here would mean the alert was lost')
      assert.equal(r.headers.get('retry-after'), '5')
      assert.equal(r.headers.get('content-type'), 'application/problem+json')
      assert.equal(r.body.detail, 'the file sink failed')
      // The alerts that errored are listed even without ?detail=1.
      assert.deepEqual([r.body.created, r.body.failed], [0, 1])
      assert.deepEqual(
        (r.body.alerts as { status: string }[]).map((a) => a.status),
        ['failed'],
      )
    }
    const m = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
    assert.equal(metric(m, 'gateway_sink_errors_total', { sink: 'file' }), 2)
    assert.equal(metric(m, 'gateway_signals_truncated_total', { service: 'gateway' }), 0)
    assert.deepEqual(sc.events('gateway.alerts.truncated'), [])
    // One log line for the failure episode, not one per request.
    const failed = await sc.waitForEvent('gateway.sink.failed')
    assert.equal(sc.events('gateway.sink.failed').length, 1)
    assert.equal((failed.err as { code: string }).code, 'ENOSPC')
  })

  test('GATEWAY_FINGERPRINT_LABELS hashes just those labels; resolved alerts are ignored', async () => {
    const a = alert('Subset', { status: 'resolved', fingerprint: '1111', labels: { pod: 'a' } })
    const b = alert('Subset', { status: 'resolved', fingerprint: '2222', labels: { pod: 'b' } })
    const r = await post(base, webhook([a, b]), {}, DETAIL)
    assert.equal(r.status, 202)
    assert.deepEqual([r.body.created, r.body.duplicates, r.body.ignored], [0, 0, 2])
    const [fa, fb] = (r.body.alerts as { fingerprint: string; status: string }[]).map((x) => x)
    assert.equal(fa!.status, 'ignored')
    assert.equal(fa!.fingerprint, fb!.fingerprint)
    const expected = createHash('sha256')
      .update(
        JSON.stringify([
          ['alertname', 'Subset'],
          ['namespace', 'payments'],
        ]),
      )
      .digest('hex')
      .slice(0, 32)
    assert.equal(fa!.fingerprint, expected)
  })
})

test('GATEWAY_RECORD_RESOLVED=false: a resolution is not stored, and the re-fire after it is new', async () => {
  const sc = await startReady({
    env: gatewayEnv({ GATEWAY_RECORD_RESOLVED: 'false', GATEWAY_AUTH_TOKEN: TOKEN }),
  })
  try {
    const base = await sc.url('gateway')
    const fired = alert('Refire')
    assert.equal((await post(base, webhook([fired]), AUTH)).status, 201)
    assert.equal((await post(base, webhook([fired]), AUTH)).status, 202, 'a repeat is a duplicate')
    const resolved = await post(base, webhook([{ ...fired, status: 'resolved' }]), AUTH)
    assert.equal(resolved.status, 202)
    assert.deepEqual([resolved.body.created, resolved.body.duplicates, resolved.body.ignored], [0, 0, 1])
    const again = await post(base, webhook([{ ...fired, startsAt: '2025-10-30T10:02:00Z' }]), AUTH)
    assert.equal(again.status, 201, 'a duplicate (202) here would lose the new incident')
    const lines = readJsonLines(join(sc.dataDir, 'alerts.jsonl'))
    assert.deepEqual(
      lines.map((l) => [l.status, l.startsAt]),
      [
        ['firing', '2025-10-30T10:00:00Z'],
        ['firing', '2025-10-30T10:02:00Z'],
      ],
    )
  } finally {
    assert.equal(await stop(sc), 0)
  }
})

describe('gateway settings', () => {
  for (const [env, setting] of [
    [{ GATEWAY_SINK: 'kafka' }, 'GATEWAY_SINK'],
    [{ GATEWAY_SINK: 'redis-stream' }, 'GATEWAY_SINK'],
    [{ GATEWAY_MAX_BODY_BYTES: '1MiB' }, 'GATEWAY_MAX_BODY_BYTES'],
    [{ GATEWAY_DEDUP_TTL: 'soon' }, 'GATEWAY_DEDUP_TTL'],
  ] as const) {
    test(`invalid ${setting} exits 2 naming it`, async () => {
      const sc = startSidecar({ env: gatewayEnv(env) })
      const { code } = await sc.exited
      assert.equal(code, 2)
      assert.match(sc.stderr() + sc.records.map((r) => r.msg).join('\n'), new RegExp(setting))
    })
  }
})
