import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { startZtsDouble } from './doubles/zts.js'
import { httpsRequest } from './doubles/zts-https.js'
import { eventually } from './support/eventually.js'
import { parsePromText } from './support/prom-text.js'
import { startReady, stop } from './support/sidecar.js'
import { slowClient } from './support/slow-client.js'

/**
 * The token server is not held hostage by its own cache (issue 10): a bounded LRU cache, a refresh
 * that re-fetches only what is worth it in slices, misses that complete during shutdown, and the
 * read deadlines on the TLS server. The built CLI, real sockets, a ZTS double over HTTPS.
 */

/** Only the token service and the metrics (the certificate service starts first: the authority). */
function tokenEnv(env: Record<string, string>): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'sia-token-bounds-'))
  const file = join(dir, 'config.json')
  writeFileSync(file, JSON.stringify({ services: { 'memory-reporter': { enabled: false } } }))
  return { SIA_CONFIG_FILE: file, GATEWAY_ADDR: '', HEALTH_CHECK_ADDR: '', ...env }
}

/** Runs `fn` over `items`, `lanes` at a time. */
async function pool<T>(items: readonly T[], lanes: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (next < items.length) await fn(items[next++] as T)
    }),
  )
}

const MAX_ENTRIES = 3000

test('5,000 token keys with a 5s refresh: no watchdog, no failed request, the cache within its bound', async (t) => {
  const sc = await startReady({
    env: tokenEnv({
      TOKEN_REFRESH_INTERVAL: '5s',
      TOKEN_CACHE_MAX_ENTRIES: String(MAX_ENTRIES),
      TARGET_DOMAIN_ROLES: 'demo:role.target',
    }),
  })
  t.after(() => stop(sc, 'SIGKILL'))
  const base = await sc.url('token')
  const metricsUrl = `${await sc.url('metrics')}/metrics`
  const statuses = new Map<number, number>()
  const ask = async (role: string) => {
    let status: number
    try {
      const res = await fetch(`${base}/accesstoken`, {
        method: 'POST',
        body: JSON.stringify({ domain: 'load', role }),
      })
      await res.arrayBuffer()
      status = res.status
    } catch {
      status = 0
    }
    statuses.set(status, (statuses.get(status) ?? 0) + 1)
  }
  const scrape = async () => parsePromText(await (await fetch(metricsUrl)).text())
  const bounded = async (when: string) => {
    const samples = await scrape()
    const entries = samples.find(
      (s) => s.name === 'cached_token_entries' && s.labels.type === 'accesstoken',
    )?.value
    const series = samples.filter(
      (s) => s.name === 'token_expires_in_seconds' && s.labels.type === 'accesstoken',
    ).length
    assert.ok(entries !== undefined && entries > 0, `${when}: cached_token_entries is exported`)
    // The targets' own cache comes on top of the bound.
    assert.ok(entries <= MAX_ENTRIES + 1, `${when}: ${entries} entries`)
    assert.ok(series <= MAX_ENTRIES + 1, `${when}: ${series} token_expires_in_seconds series`)
    return samples
  }

  // 5,000 distinct keys: more than the cache holds.
  const keys = Array.from({ length: 5000 }, (_, i) => `r${i}`)
  await pool(keys, 16, ask)
  await bounded('after 5,000 keys')

  // A working set used again and again through two refreshes: every refresh re-fetches the keys
  // used since the previous one (thousands of signatures), in slices, while they are asked for.
  // A pass every 1.5 s at most: each key is used between refreshes, and the two cores the suite
  // shares are not spent on cache hits.
  const refreshes = sc.events('token.cache.updated').length
  const hot = keys.slice(-2000)
  const until = Date.now() + 20_000
  while (sc.events('token.cache.updated').length < refreshes + 2 && Date.now() < until) {
    const pass = Date.now()
    await pool(hot, 16, ask)
    await sleep(Math.max(0, 1500 - (Date.now() - pass)))
  }
  assert.ok(sc.events('token.cache.updated').length >= refreshes + 2, 'two refreshes under load within 20 s')
  const samples = await bounded('after the refreshes')
  const worked = sc
    .events('token.cache.updated')
    .slice(refreshes)
    .map((r) => (r.accesstoken as { updated: number }).updated)
  assert.ok(
    worked.some((n) => n > 100),
    `the refreshes re-fetched the keys in use: ${worked.join(', ')}`,
  )

  assert.deepEqual([...statuses], [[200, statuses.get(200)]], `every request answered 200: ${[...statuses]}`)
  for (const event of ['worker.watchdog', 'worker.crashed', 'worker.restarting']) {
    assert.deepEqual(sc.events(event), [], `no ${event}`)
  }
  const delay = samples.find(
    (s) => s.name === 'sia_worker_event_loop_delay_max_seconds' && s.labels.service === 'token',
  )?.value
  t.diagnostic(
    `${statuses.get(200)} requests; refreshes re-fetched ${worked.join(', ')}; token loop held at most ${((delay ?? 0) * 1000).toFixed(0)}ms since the last scrape`,
  )
  assert.equal(await stop(sc), 0)
})

test('ZTS provider, TLS token server: a slow body gets 408, and a miss in flight at SIGTERM completes with 200', async (t) => {
  const zts = await startZtsDouble()
  t.after(() => zts.close())
  const dir = mkdtempSync(join(tmpdir(), 'sia-token-late-'))
  mkdirSync(join(dir, 'id'))
  const pair = await zts.issue('my.team.api')
  const keyFile = join(dir, 'id', 'key.pem')
  const certFile = join(dir, 'id', 'cert.pem')
  writeFileSync(keyFile, pair.keyPem, { mode: 0o600 })
  writeFileSync(certFile, pair.certPem)
  const sc = await startReady({
    dataDir: dir,
    env: tokenEnv({
      ENDPOINT: zts.url,
      SERVER_CA_CERT: zts.caFile,
      ATHENZ_DOMAIN: 'my.team',
      SERVICEACCOUNT: 'api',
      KEY_FILE: keyFile,
      CERT_FILE: certFile,
      TOKEN_SERVER_TLS_CERT_PATH: certFile,
      TOKEN_SERVER_TLS_KEY_PATH: keyFile,
      HTTP_HEADER_TIMEOUT: '2s',
      HTTP_REQUEST_TIMEOUT: '3s',
      TOKEN_SERVER_TIMEOUT: '10s',
    }),
  })
  t.after(() => stop(sc, 'SIGKILL'))
  const port = (await sc.waitForEvent('server.listening', { service: 'token' })).port as number

  const slow = slowClient({ port, mode: 'body', path: '/accesstoken', tls: true })
  t.after(() => slow.socket.destroy())
  const a = await slow.answer
  assert.equal(a.status, 408, 'a body that does not arrive in time: 408 Request Timeout')
  assert.ok(a.afterMs >= 2900 && a.afterMs <= 3000 + 300 + 1500, `408 after ${a.afterMs.toFixed(0)}ms`)

  zts.delay('oauth2', 1500)
  const before = zts.counts.oauth2
  const late = httpsRequest(
    `https://127.0.0.1:${port}/accesstoken`,
    { ca: zts.caPem },
    { method: 'POST', body: JSON.stringify({ domain: 'demo', role: 'late' }) },
  )
  await eventually(async () => (zts.counts.oauth2 > before ? true : undefined)) // the miss is at ZTS now
  sc.kill('SIGTERM')
  const reply = await late
  assert.equal(reply.status, 200, reply.body)
  assert.match(JSON.parse(reply.body).access_token, /^[\w-]+\.[\w-]+\.[\w-]+$/)
  assert.equal((await sc.exited).code, 0)
  assert.deepEqual(sc.events('token.request.failed'), [])
})
