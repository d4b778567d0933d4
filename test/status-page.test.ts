import assert from 'node:assert/strict'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { type BrowserContext, chromium, type Page } from 'playwright-core'
import type { MetricValue } from 'prom-client'
import { loadConfig } from '../shared/config/load.js'
import type { Config } from '../shared/config/types.js'
import { SERVICES } from '../shared/services.js'
import { createStatusBoard } from '../shared/status-board.js'
import type { StatusSources, StatusView } from '../workers/metrics/status.js'
import { buildStatus, redact } from '../workers/metrics/status.js'
import {
  bytes,
  DEFAULT_REFRESH_SECONDS,
  duration,
  escapeHtml,
  refreshSeconds,
  renderStatusPage,
} from '../workers/metrics/status-page.js'
import { REPO } from './support/deploy.js'
import { startSidecar, stop } from './support/sidecar.js'

/**
 * The live status page (issue 15): GET /status on the metrics port, checked in a real browser
 * (Debian's chromium driven by playwright-core), and GET /status.json for scripts.
 */

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

function sampleView(): StatusView {
  return {
    generatedAt: '2026-11-22T12:00:00.000Z',
    process: {
      phase: 'running',
      ready: true,
      notReady: [],
      uptimeSeconds: 3725,
      residentMemoryBytes: 220 * 2 ** 20,
      memoryLimitBytes: 512 * 2 ** 20,
      nodeVersion: 'v26.10.0',
    },
    shutdown: { delaySeconds: 5, timeoutSeconds: 30, budgetSeconds: 35, minGracePeriodSeconds: 37 },
    workers: SERVICES.map((service) => ({
      service,
      enabled: true,
      state: 'running',
      up: true,
      uptimeSeconds: 60,
      restarts: {},
      restartsTotal: 0,
      heapUsedBytes: 10 * 2 ** 20,
      heapLimitBytes: 64 * 2 ** 20,
      heapPercent: 15.6,
      eventLoopUtilization: 0.01,
      heartbeatAgeSeconds: 0.2,
      startSeconds: 0.01,
      lastError: null,
    })),
    unanswered: [],
    certificates: { readErrors: 0, files: [] },
    tokens: { enabled: true, types: [], soonestExpirySeconds: null, fetchErrors: 0 },
    gateway: {
      enabled: true,
      requests: {},
      requestRate: null,
      createdRate: null,
      received: {},
      created: 0,
      duplicates: 0,
      sinkErrors: 0,
      inflight: 0,
      dedupStoreUp: true,
      meanLatencySeconds: null,
    },
  }
}

test('a worker with no thread (down, stopped) shows no heap or loop figures: its row keeps its last thread’s', async () => {
  const board = createStatusBoard()
  board.setPhase('running')
  for (const s of SERVICES) {
    board.setState(s, 'running')
    board.setVitals(s, 10 * 2 ** 20, 64 * 2 ** 20, 0.01)
    board.beat(s)
  }
  board.setVitals('memory-reporter', 10 * 2 ** 20, 64 * 2 ** 20, 1)
  board.setState('memory-reporter', 'down')
  const config = (loadConfig([], {}) as { config: Config }).config
  const view = await buildStatus({ config, board, metrics: [], upServices: new Set(), lastErrors: {} })
  const row = (s: string) => view.workers.find((w) => w.service === s)!
  assert.deepEqual(
    [
      row('memory-reporter').heapPercent,
      row('memory-reporter').eventLoopUtilization,
      row('memory-reporter').heapUsedBytes,
    ],
    [null, null, null],
  )
  assert.deepEqual([row('token').heapPercent, row('token').eventLoopUtilization], [15.6, 0.01])
  assert.match(renderStatusPage(view, 0), /id="worker-memory-reporter"/)
})

test('a view in which the gateway did not answer counts nothing: the rate after it is against the view before it', async () => {
  const board = createStatusBoard()
  board.setPhase('running')
  const config = (loadConfig([], {}) as { config: Config }).config
  const counter = (name: string, values: MetricValue<string>[]) =>
    ({
      name,
      help: name,
      type: 'counter',
      aggregator: 'sum',
      values,
    }) as unknown as StatusSources['metrics'][number]
  const gateway = (requests: number, created: number) => [
    counter('gateway_requests_total', [{ labels: { code: '201', service: 'gateway' }, value: requests }]),
    counter('gateway_signals_created_total', [{ labels: { service: 'gateway' }, value: created }]),
  ]
  // Views of their own: far from any other test's in this process (rates look 10 minutes back).
  const t0 = Date.now() + 86_400_000
  const view = async (at: number, metrics: StatusSources['metrics'], up: string[]) =>
    (await buildStatus({ config, board, metrics, upServices: new Set(up), lastErrors: {}, now: at })).gateway
  await view(t0, gateway(100_000, 90_000), ['gateway'])
  const silent = await view(t0 + 10_000, [], [])
  assert.deepEqual([silent.requestRate, silent.createdRate], [null, null])
  const after = await view(t0 + 12_000, gateway(100_024, 90_012), ['gateway'])
  assert.deepEqual([after.requestRate, after.createdRate], [2, 1])
})

test('services that did not answer the view are said so, not shown as "none": status.json lists them, their counts null', async () => {
  const board = createStatusBoard()
  board.setPhase('running')
  const config = (loadConfig([], {}) as { config: Config }).config
  const view = await buildStatus({
    config,
    board,
    metrics: [],
    upServices: new Set(['memory-reporter', 'healthcheck']),
    lastErrors: {},
  })
  assert.deepEqual(view.unanswered, ['certificate', 'token', 'gateway'])
  assert.deepEqual(
    [view.certificates.readErrors, view.tokens.fetchErrors, view.gateway.sinkErrors],
    [null, null, null],
  )
  const html = renderStatusPage(view, 0)
  for (const s of view.unanswered) assert.match(html, new RegExp(`${s} did not answer`))
  for (const none of ['no read errors', 'no certificate', 'none yet', '>empty<']) {
    assert.ok(!html.includes(none), `not "${none}"`)
  }
  assert.match(html, /<dt>sink errors<\/dt><dd>—<\/dd>/, 'sink errors not known, not 0')
})

describe('status page: rendering', () => {
  test('every value is HTML-escaped, wherever it comes from', () => {
    const view = sampleView()
    const evil = '<script>alert(1)</script>"\'&'
    view.workers[3]!.lastError = { reason: 'exception', at: evil, message: evil }
    view.workers[3]!.restarts = { [evil]: 2 }
    view.certificates.files.push({
      file: evil,
      subject: `CN=${evil}`,
      issuer: evil,
      notAfter: evil,
      expiresInSeconds: 100,
      expired: false,
      renewalDue: true,
    })
    view.tokens.types.push({ type: evil, entries: 1, bytes: 2 })
    view.gateway.requests = { [evil]: 1 }
    view.gateway.received = { [evil]: 1 }
    view.process.notReady = [{ service: evil, state: evil }]
    view.process.ready = false
    const html = renderStatusPage(view, 5)
    assert.ok(!html.includes('<script'), 'no script element gets through')
    assert.ok(!html.includes(evil))
    assert.ok(html.includes('&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;'))
    assert.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;')
  })

  test('the page refreshes itself, as often as asked, and never loads anything', () => {
    const view = sampleView()
    assert.match(renderStatusPage(view, 7), /<meta http-equiv="refresh" content="7">/)
    assert.doesNotMatch(renderStatusPage(view, 0), /http-equiv="refresh"/)
    assert.equal(refreshSeconds(''), DEFAULT_REFRESH_SECONDS)
    assert.equal(refreshSeconds('?refresh=2'), 2)
    assert.equal(refreshSeconds('?refresh=0'), 0)
    assert.equal(refreshSeconds('?refresh=-1'), DEFAULT_REFRESH_SECONDS)
    assert.equal(refreshSeconds('?refresh=1e9'), DEFAULT_REFRESH_SECONDS)
    assert.equal(refreshSeconds('?refresh=9999'), 3600)
    const html = renderStatusPage(view, 5)
    assert.doesNotMatch(html, /<script|<link|<img|src=|url\(/i, 'no script, no external asset')
    assert.match(
      html,
      /<meter[^>]*max="67108864"[^>]*value="10485760"/,
      'heap used against its limit as a bar',
    )
    assert.match(html, /SHUTDOWN_DELAY 5 s \+ SHUTDOWN_TIMEOUT 30 s = <strong>35 s<\/strong>/)
  })

  test('errors are shown without credentials, keys or tokens', () => {
    const jwt = `eyJhbGciOiJSUzI1NiJ9.${'a'.repeat(60)}.${'b'.repeat(80)}`
    const pem = '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----'
    const text = redact(
      `connect to redis://user:hunter2@redis:6379 failed; token=${jwt} key ${pem} Bearer abc.def`,
    )
    for (const secret of ['hunter2', jwt, 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASC', 'abc.def']) {
      assert.ok(!text.includes(secret), `${secret.slice(0, 12)}… is not shown`)
    }
    assert.match(text, /redis:\/\/\*\*\*@redis:6379/)
    // A password written raw, with an @ or a / in it (not percent-encoded): all of it cut.
    for (const url of ['redis://:p@ss@redis:6379', 'rediss://u:pa/ss@redis:6380/0']) {
      const shown = redact(`connect to ${url} failed`)
      assert.doesNotMatch(shown, /ss@|pa\/|p@/, shown)
      assert.match(shown, /^connect to rediss?:\/\/\*\*\*@redis:63(79|80)/)
    }
    assert.equal(
      redact("ENOENT: no such file or directory, open '/var/run/athenz/service.key.pem'"),
      "ENOENT: no such file or directory, open '/var/run/athenz/service.key.pem'",
      'an ordinary message is kept as it is',
    )
    assert.ok(redact('x'.repeat(1000)).length <= 300)
    // A long message without spaces, addresses in it: linear, not a blocked thread (seconds).
    const t0 = performance.now()
    redact('a://b'.repeat(20_000))
    redact('w'.repeat(100_000))
    const ms = performance.now() - t0
    assert.ok(ms < 1000, `${ms.toFixed(0)} ms (it took seconds)`)
  })

  test('sizes and durations read as an operator writes them', () => {
    assert.equal(bytes(512), '512 B')
    assert.equal(bytes(220 * 2 ** 20), '220.0 MiB')
    assert.equal(bytes(null), '—')
    assert.equal(duration(59), '59s')
    assert.equal(duration(3725), '1h 2m')
    assert.equal(duration(172799), '1d 23h')
    assert.equal(duration(-90), '-1m 30s')
    assert.equal(duration(null), '—')
  })
})

/** Reads an attribute, retrying while the page is between two of its own refreshes. */
async function attr(page: Page, selector: string, name: string): Promise<string | null> {
  for (let i = 0; ; i++) {
    try {
      return await page.locator(selector).getAttribute(name, { timeout: 5000 })
    } catch (err) {
      if (i >= 5) throw err
      await sleep(100)
    }
  }
}

/** Resolves once `check` holds, polling the page (which reloads itself: the test never does). */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`the status page never showed ${what} within ${timeoutMs}ms`)
    await sleep(200)
  }
}

describe('status page: a running sidecar in a real browser', () => {
  test('every worker with its state; a crashed worker’s restarts go up on the page; status.json agrees', async (t) => {
    if (!existsSync(CHROMIUM)) {
      return t.skip(
        `${CHROMIUM} is missing (apt-get install chromium; .ci/run does): the page is not checked in a browser`,
      )
    }
    const out = mkdtempSync(join(tmpdir(), 'sia-status-page-'))
    const gatewaySecret = 'gateway-secret-7f3a9c1e5b2d4f6a8c0e'
    // The browser first: it is up before the sidecar boots, well within the health check's delay.
    const browser: BrowserContext = await chromium.launchPersistentContext(join(out, 'user-data'), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1400, height: 1000 },
    })
    t.after(() => browser.close().catch(() => {}))
    // The health check starts last, after the metrics service: delayed, it is seen starting, then
    // it crashes once right after its start (a failpoint), and the supervisor restarts it.
    const sc = startSidecar({
      env: {
        SIA_FAILPOINTS: 'healthcheck.start=1*delay(6000);healthcheck.before-task:server=1*crash',
        TARGET_DOMAIN_ROLES: 'demo:role.reader',
        GATEWAY_AUTH_TOKEN: gatewaySecret,
      },
    })
    t.after(() => {
      if (sc.proc.exitCode === null && sc.proc.signalCode === null) sc.kill('SIGKILL')
    })
    const page = await browser.newPage()
    const base = await sc.url('metrics', 30_000)
    const requests: string[] = []
    page.on('request', (r) => requests.push(r.url()))
    let loads = 0
    page.on('load', () => loads++)

    const first = await page.goto(`${base}/status?refresh=1`)
    assert.equal(first?.status(), 200)
    const headers = first!.headers()
    assert.match(headers['content-type'] ?? '', /^text\/html/)
    assert.match(headers['content-security-policy'] ?? '', /default-src 'none'/)

    // Every worker has its row, with a state; the health check is still starting, never restarted.
    for (const s of SERVICES) {
      assert.ok(await attr(page, `#worker-${s}`, 'data-state'), `${s} has a row with its state`)
    }
    assert.equal(await attr(page, '#worker-healthcheck', 'data-state'), 'starting')
    assert.equal(await attr(page, '#worker-healthcheck', 'data-restarts'), '0')
    assert.equal(await page.locator('#worker-healthcheck .restarts .count').textContent(), '0')

    // The crash happens; the page, refreshing itself, shows the restart and then the new worker.
    await until('the health check restarted and running', async () => {
      const restarts = await attr(page, '#worker-healthcheck', 'data-restarts')
      return restarts === '1' && (await attr(page, '#worker-healthcheck', 'data-state')) === 'running'
    })
    await until('every worker running and the process ready', async () => {
      for (const s of SERVICES)
        if ((await attr(page, `#worker-${s}`, 'data-state')) !== 'running') return false
      return (await page.locator('#readiness').textContent()) === 'ready'
    })
    assert.ok(loads >= 2, `the page reloaded itself (${loads} loads)`)
    const crash = await page.locator('#worker-healthcheck .last-error').textContent()
    assert.match(crash ?? '', /exception: ERR_FAILPOINT_CRASH/, 'the last error is shown')
    assert.match((await page.locator('#worker-healthcheck .restarts').textContent()) ?? '', /exception 1/)

    // A webhook (with the gateway's bearer secret): its answer shows among the gateway's rates.
    const hook = await fetch(`${await sc.url('gateway')}/api/v1/signals/prometheus`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${gatewaySecret}` },
      body: readFileSync(join(REPO, 'test', 'fixtures', 'alertmanager.json')),
    })
    assert.equal(hook.status, 201)
    await until('the webhook among the gateway requests', async () =>
      /201: 1/.test((await page.locator('#gateway').textContent()) ?? ''),
    )

    // Stop the refresh to compare one view with status.json, and take the screenshot.
    await page.goto(`${base}/status?refresh=0`)
    const screenshot = join(out, 'status-page.png')
    await page.screenshot({ path: screenshot, fullPage: true })
    assert.ok(readFileSync(screenshot).length > 10_000, 'a screenshot was written')
    t.diagnostic(`screenshot: ${screenshot}`)
    console.log(`status page screenshot: ${screenshot}`)

    const json = (await (await fetch(`${base}/status.json`)).json()) as StatusView
    for (const w of json.workers) {
      assert.equal(await attr(page, `#worker-${w.service}`, 'data-state'), w.state, `${w.service} state`)
      assert.equal(
        await page.locator(`#worker-${w.service} .restarts .count`).textContent(),
        String(w.restartsTotal),
        `${w.service} restarts`,
      )
    }
    assert.deepEqual(
      json.workers.map((w) => w.service),
      [...SERVICES],
    )
    assert.deepEqual(json.workers.find((w) => w.service === 'healthcheck')?.restarts, { exception: 1 })
    const files = await page
      .locator('#certificates tr[data-file]')
      .evaluateAll((rows) => rows.map((r) => r.getAttribute('data-file')))
    assert.deepEqual(
      files,
      json.certificates.files.map((c) => c.file),
    )
    assert.ok(files.includes('cert.pem') && files.includes('ca.pem'), 'the service and CA certificates')
    const tokenTypes = await page
      .locator('#tokens tr[data-type]')
      .evaluateAll((rows) => rows.map((r) => r.getAttribute('data-type')))
    assert.deepEqual(
      tokenTypes,
      json.tokens.types.map((x) => x.type),
    )
    assert.ok(
      json.tokens.types.every((x) => x.entries >= 1),
      'the target role’s tokens are cached',
    )
    assert.match(
      (await page.locator('#shutdown-budget').textContent()) ?? '',
      new RegExp(`= ${json.shutdown.budgetSeconds} s`),
    )
    assert.equal(json.shutdown.budgetSeconds, 30, 'SHUTDOWN_DELAY 0 + SHUTDOWN_TIMEOUT 30s')
    assert.equal(json.gateway.dedupStoreUp, true)
    assert.deepEqual(json.gateway.requests, { '201': 1 })
    assert.equal(json.gateway.created, 2, 'both alerts of the fixture are new')
    assert.equal(typeof json.gateway.requestRate, 'number', 'a rate against the views before')
    assert.equal(
      (await page.locator('#dedup-store').textContent())?.trim(),
      json.gateway.dedupStoreUp ? 'up' : 'down',
    )

    // Nothing secret on either: no token, no key, not the gateway's bearer secret.
    const token = (await (
      await fetch(`${await sc.url('token')}/accesstoken`, {
        method: 'POST',
        body: JSON.stringify({ domain: 'demo', role: 'reader' }),
      })
    ).json()) as { access_token: string }
    assert.ok(token.access_token.length > 100)
    const key = readFileSync(join(sc.dataDir, 'key.pem'), 'utf8')
    const keyBody = key.split('\n')[1]!
    const views = [await page.content(), await (await fetch(`${base}/status.json`)).text()]
    await page.reload()
    views.push(await page.content())
    for (const v of views) {
      assert.ok(!v.includes(gatewaySecret), 'not the gateway auth token')
      assert.ok(!v.includes(token.access_token) && !v.includes(token.access_token.split('.')[2]!), 'no token')
      assert.ok(!v.includes(keyBody) && !v.includes('PRIVATE KEY'), 'no key material')
    }
    assert.equal((await fetch(`${base}/status`, { method: 'POST' })).status, 405)
    const head = await fetch(`${base}/status.json`, { method: 'HEAD' })
    assert.equal(head.status, 200)
    assert.equal(await head.text(), '')
    const origin = new URL(base).origin
    assert.deepEqual(
      requests.filter((u) => !u.startsWith(origin)),
      [],
      'the page loads nothing from anywhere else',
    )

    assert.equal(await stop(sc), 0)
  })
})

test('status.json gives the container’s memory limit, read from its cgroup (v1 here; v2 alike), not a soft limit', async (t) => {
  // A memory cgroup of the test's own (cgroup v1, or v2 with the memory controller), 512 MiB,
  // with a soft limit of 256 MiB (v1's soft limit, v2's memory.high: what libuv would give).
  const name = `sia-test-${process.pid}`
  const v1 = existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes')
  const dir = v1 ? `/sys/fs/cgroup/memory/${name}` : `/sys/fs/cgroup/${name}`
  try {
    mkdirSync(dir)
    writeFileSync(join(dir, v1 ? 'memory.limit_in_bytes' : 'memory.max'), String(512 * 2 ** 20))
    writeFileSync(join(dir, v1 ? 'memory.soft_limit_in_bytes' : 'memory.high'), String(256 * 2 ** 20))
  } catch (err) {
    return t.skip(`cannot make a memory cgroup here (${(err as Error).message}): needs root`)
  }
  const sc = startSidecar({
    env: { TOKEN_SERVER_ADDR: '', GATEWAY_ADDR: '' },
    // Into the cgroup, then the CLI, the same process.
    command: (node, argv) => ({
      file: '/bin/sh',
      args: ['-c', `echo $$ > ${dir}/cgroup.procs && exec "$0" "$@"`, node, ...argv],
    }),
  })
  t.after(async () => {
    await stop(sc, 'SIGKILL')
    rmdirSync(dir)
  })
  await sc.waitForEvent('supervisor.ready')
  const view = (await (await fetch(`${await sc.url('metrics')}/status.json`)).json()) as StatusView
  assert.equal(view.process.memoryLimitBytes, 512 * 2 ** 20)
  assert.equal(await stop(sc), 0)
})
