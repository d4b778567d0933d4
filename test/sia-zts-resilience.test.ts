import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext, test } from 'node:test'
import { providerEnv, startZtsDouble, type ZtsDouble } from './doubles/zts.js'
import { eventually } from './support/eventually.js'
import { parsePromText } from './support/prom-text.js'
import { CLI, type Sidecar, startReady, startSidecar, stop } from './support/sidecar.js'

const PEM = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g

/** A ZTS double of the test's own: the tests inject faults into it, and run two at a time. */
async function ztsOf(t: TestContext): Promise<ZtsDouble> {
  const zts = await startZtsDouble()
  t.after(() => zts.close())
  return zts
}

const ztsEnv = (zts: ZtsDouble): Record<string, string> => ({
  ...providerEnv(zts),
  ATHENZ_DOMAIN: 'my.team',
  SERVICEACCOUNT: 'api',
  POD_UID: 'pod-3',
  TOKEN_SERVER_ADDR: '',
})

// Each test has its own ZTS double and sidecar, and most wait out a back-off or a deadline: three at a time.
describe('ZTS faults', { concurrency: 3 }, () => {
  describe('ZTS resilience against the ZTS double', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-zts-res-'))
    let zts: ZtsDouble
    let sc: Sidecar
    const certFile = join(dir, 'cert.pem')
    const leaf = () => new X509Certificate(readFileSync(certFile, 'utf8').match(PEM)![0]!)

    before(async () => {
      zts = await startZtsDouble()
      sc = await startReady({
        dataDir: dir,
        env: { ...ztsEnv(zts), INTERMEDIATE_CERT_BUNDLE: 'athenz', REFRESH_INTERVAL: '2s' },
      })
    })
    after(async () => {
      if (sc) assert.equal(await stop(sc), 0)
      await zts?.close()
    })

    it('appends INTERMEDIATE_CERT_BUNDLE, fetched from /cacerts/{name} with the new identity', () => {
      const pems = readFileSync(certFile, 'utf8').match(PEM)!
      assert.equal(pems.length, 2)
      assert.equal(new X509Certificate(pems[0]!).subject.split('\n')[0], 'CN=my.team.api')
      assert.equal(pems[1], zts.intermediatePem.trim())
      const fetched = zts.received.find((r) => r.route === 'cacerts')!
      assert.equal(fetched.clientCN, 'my.team.api')
      // The instance certificate fetched just before is the one that authenticated the fetch.
      assert.ok(zts.counts.cacerts >= 1)
    })

    it('falls back to a fresh register with a new key when a refresh fails (403, or 5xx after its retries)', async () => {
      for (const [status, times] of [
        [403, 1],
        [503, 3],
      ] as const) {
        await sc.waitFor(() => zts.counts.refresh >= 1) // the identity is refreshed over mutual TLS first
        const registers = zts.counts.register
        const fallbacks = sc.events('certificate.refresh.register').length
        const key = readFileSync(join(dir, 'key.pem'), 'utf8')
        const serial = leaf().serialNumber
        const from = zts.received.length
        zts.failNext('refresh', status, times)
        await sc.waitFor(() => sc.events('certificate.refresh.register').length > fallbacks)
        await sc.waitFor(() => zts.counts.register > registers && leaf().serialNumber !== serial)
        const since = zts.received.slice(from)
        const reg = since.find((r) => r.route === 'register')!
        // Every retry of the refresh first (none for a 403), then the register.
        assert.deepEqual(
          since
            .slice(0, since.indexOf(reg) + 1)
            .map((r) => r.route)
            .filter((r) => r !== 'cacerts'),
          [...Array(times).fill('refresh'), 'register'],
        )
        const newKey = readFileSync(join(dir, 'key.pem'), 'utf8')
        assert.notEqual(newKey, key, 'a new key')
        assert.ok(leaf().checkPrivateKey(createPrivateKey(newKey)))
        assert.equal(reg.csr!.commonName, 'my.team.api')
        assert.deepEqual(reg.csr!.uris, ['spiffe://my.team/sa/api', 'athenz://instanceid/athenz.k8s/pod-3'])
        // Still with the bundle appended.
        assert.equal(readFileSync(certFile, 'utf8').match(PEM)!.length, 2)
      }
      const failure = sc.events('certificate.refresh.register').at(-1)!
      assert.match(String((failure.err as { message?: string }).message), /answered 503/)
    })
  })

  test('an unknown INTERMEDIATE_CERT_BUNDLE fails the issue: nothing written, the start fails (exit 1)', async (t) => {
    const zts = await ztsOf(t)
    const dir = mkdtempSync(join(tmpdir(), 'sia-zts-res-'))
    // It is retried at boot while the start has time (START_TIMEOUT, less a margin), then fails it.
    const sc = startSidecar({
      dataDir: dir,
      env: { ...ztsEnv(zts), INTERMEDIATE_CERT_BUNDLE: 'nosuch', START_TIMEOUT: '3s' },
    })
    try {
      const failed = await sc.waitForEvent('service.start.failed', { service: 'certificate' })
      assert.match(JSON.stringify(failed.err), /cacerts\/nosuch answered 404/)
      assert.equal((await sc.exited).code, 1)
      assert.ok(!existsSync(join(dir, 'cert.pem')))
      assert.ok(!existsSync(join(dir, 'key.pem')))
    } finally {
      await stop(sc)
    }
  })

  test('a provider failing for a moment at the first boot is retried on the back-off schedule, as SIA: the start succeeds', async (t) => {
    const zts = await ztsOf(t)
    const dir = mkdtempSync(join(tmpdir(), 'sia-zts-res-'))
    zts.failNext('register', 503, 3) // every try of the client's first call
    const sc = await startReady({ dataDir: dir, env: ztsEnv(zts) })
    try {
      const retry = sc.events('certificate.boot.retry')
      assert.equal(retry.length, 1)
      assert.ok((retry[0]!.retryInMs as number) >= 3750 && (retry[0]!.retryInMs as number) <= 5000)
      assert.ok(existsSync(join(dir, 'cert.pem')))
      assert.deepEqual(sc.events('service.start.failed'), [])
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('a provider that hangs at start: the identity on disk is kept, and the start answers before its startTimeout', async (t) => {
    const zts = await ztsOf(t)
    const dir = mkdtempSync(join(tmpdir(), 'sia-zts-res-'))
    // REFRESH_INTERVAL=1s: the identity on disk is due at the next start, which asks ZTS for a refresh.
    const env = { ...ztsEnv(zts), REFRESH_INTERVAL: '1s', START_TIMEOUT: '4s' }
    assert.equal(await stop(await startReady({ dataDir: dir, env })), 0)
    const kept = readFileSync(join(dir, 'cert.pem'), 'utf8')
    zts.delay('refresh', 60_000)
    const sc = await startReady({ dataDir: dir, env })
    t.after(() => stop(sc, 'SIGKILL'))
    const failed = sc.events('certificate.refresh.failed')[0]
    assert.match(JSON.stringify(failed?.err), /ERR_PROVIDER_TIMEOUT/)
    assert.equal(failed?.keeping, join(dir, 'cert.pem'))
    assert.equal(readFileSync(join(dir, 'cert.pem'), 'utf8'), kept)
    assert.deepEqual(sc.events('service.start.timeout'), [])
    assert.equal(await stop(sc), 0)
  })

  test('target tokens at boot: a ZTS that hangs leaves them failed, not the start timed out; a failed pass is retried with back-off', async (t) => {
    const zts = await ztsOf(t)
    const dir = mkdtempSync(join(tmpdir(), 'sia-zts-res-'))
    const env = {
      ...ztsEnv(zts),
      TOKEN_SERVER_ADDR: '127.0.0.1:0',
      TARGET_DOMAIN_ROLES: 'demo:role.reader',
      TOKEN_DIR: join(dir, 'tokens'),
      TOKEN_TYPE: 'accesstoken',
      TOKEN_REFRESH_INTERVAL: '1h',
      START_TIMEOUT: '4s',
    }
    zts.delay('oauth2', 60_000)
    const sc = await startReady({ dataDir: dir, env })
    t.after(() => stop(sc, 'SIGKILL'))
    const boot = sc.events('token.cache.updated')[0]
    assert.deepEqual(boot?.accesstoken, { updated: 0, failed: 1, skipped: 0 })
    assert.deepEqual(sc.events('service.start.timeout'), [])
    // ZTS answers again: the failed pass is retried 3.75 to 5 s later, not TOKEN_REFRESH_INTERVAL (1 h).
    zts.delay('oauth2', 0)
    await sc.waitFor(
      (r) => r.event === 'token.cache.updated' && (r.accesstoken as { updated: number }).updated === 1,
      20_000,
    )
    assert.match(
      readFileSync(join(dir, 'tokens', 'demo:role.reader.accesstoken'), 'utf8'),
      /^[\w-]+\.[\w-]+\.[\w-]+$/,
    )
    assert.equal(await stop(sc), 0)
  })

  test('a ZTS that hangs: a token fetch every client gave up on (TOKEN_SERVER_TIMEOUT) is aborted, not retried, and counted failed', async (t) => {
    const zts = await ztsOf(t)
    zts.delay('oauth2', 60_000)
    zts.delay('roletoken', 60_000)
    const sc = await startReady({
      env: { ...ztsEnv(zts), TOKEN_SERVER_ADDR: '127.0.0.1:0', TOKEN_SERVER_TIMEOUT: '1s' },
    })
    t.after(() => stop(sc, 'SIGKILL'))
    const base = await sc.url('token')
    const keys = 10
    const statuses = await Promise.all(
      Array.from({ length: keys }, async (_, i) => {
        const res = await fetch(`${base}/`, {
          headers: { 'x-athenz-domain': 'flood', 'x-athenz-role': `r${i}` },
        })
        await res.arrayBuffer()
        return res.status
      }),
    )
    assert.deepEqual(statuses, Array(keys).fill(503))
    // Header mode fetches both tokens: each fetch ends failed once its one client gave up...
    const metricsUrl = `${await sc.url('metrics')}/metrics`
    const errors = async () => {
      const metrics = parsePromText(await (await fetch(metricsUrl)).text())
      const of = (type: string) =>
        metrics.find((m) => m.name === 'token_fetch_errors_total' && m.labels.type === type)?.value
      return [of('accesstoken'), of('roletoken')]
    }
    const counted = await eventually(async () => {
      const e = await errors()
      return e[0] === keys && e[1] === keys ? e : undefined
    })
    assert.deepEqual(counted, [keys, keys], 'ZTS too slow for anyone: failures')
    // ...and is closed at ZTS, not kept for ZTS's attempt deadline (10 s) and tried twice more, a
    // new socket each time. (On a loaded machine a fetch may be aborted in its TLS handshake,
    // before ZTS sees a request: closed all the same.)
    const asked = () => zts.received.filter((r) => r.route === 'oauth2' || r.route === 'roletoken')
    await eventually(async () => (asked().every((r) => r.abandoned) ? true : undefined), 8_000).catch(
      () => {},
    )
    assert.deepEqual(
      asked().filter((r) => !r.abandoned),
      [],
      'every fetch that reached ZTS closed before ZTS answered',
    )
    assert.ok(asked().length <= 2 * keys, `none tried again (${asked().length} fetches)`)
    assert.deepEqual(await errors(), [keys, keys], 'and none counted twice')
    assert.equal(await stop(sc), 0)
  })

  test('ZTS failing every request: each kind of failure is written once a window, then counted (repeats), not once a request', async (t) => {
    const zts = await ztsOf(t)
    const sc = await startReady({ env: { ...ztsEnv(zts), TOKEN_SERVER_ADDR: '127.0.0.1:0' } })
    t.after(() => stop(sc, 'SIGKILL'))
    const base = await sc.url('token')
    zts.failNext('roletoken', 500, 1_000)
    const post = async (body: string) => {
      const res = await fetch(`${base}/roletoken`, { method: 'POST', body })
      await res.arrayBuffer()
      return res.status
    }
    const failing = 60
    const invalid = 40
    const statuses = [
      ...(await Promise.all(Array.from({ length: failing }, () => post('{"domain":"demo","role":"down"}')))),
      ...(await Promise.all(Array.from({ length: invalid }, () => post('{"domain":"demo..x"}')))),
    ]
    assert.deepEqual(statuses, [...Array(failing).fill(502), ...Array(invalid).fill(400)])
    // The counts of the window still open are written at stop.
    assert.equal(await stop(sc), 0)
    const said = (event: string, status: number) => {
      const records = sc.events(event).filter((r) => r.status === status)
      const whole = records.filter((r) => r.repeats === undefined)
      const counted = records.reduce((n, r) => n + ((r.repeats as number | undefined) ?? 1), 0)
      return { whole: whole.length, counted, withError: whole.every((r) => r.err !== undefined) }
    }
    const failed = said('token.request.failed', 502)
    assert.equal(failed.counted, failing, 'every failure is told')
    assert.ok(
      failed.whole >= 1 && failed.whole <= 2,
      `written whole once a window, not ${failed.whole} times`,
    )
    assert.ok(failed.withError, 'the records written whole say why')
    assert.equal(said('token.request', 502).counted, failing)
    assert.equal(said('token.request.rejected', 400).counted, invalid)
    assert.ok(said('token.request.rejected', 400).whole <= 2)
  })

  test('a refresh pass that fails says why, at error level: what ZTS answered, for which key', async (t) => {
    const zts = await ztsOf(t)
    const dir = mkdtempSync(join(tmpdir(), 'sia-zts-res-'))
    const sc = await startReady({
      dataDir: dir,
      env: {
        ...ztsEnv(zts),
        TOKEN_SERVER_ADDR: '127.0.0.1:0',
        TARGET_DOMAIN_ROLES: 'demo:role.reader',
        TOKEN_TYPE: 'accesstoken',
        TOKEN_REFRESH_INTERVAL: '1s',
      },
    })
    t.after(() => stop(sc, 'SIGKILL'))
    zts.failNext('oauth2', 403, 1) // not retried by the client: one failed fetch
    const failed = await sc.waitForEvent('token.refresh.failed', {}, 20_000)
    assert.equal(failed.level, 'error')
    assert.equal(failed.failed, 1)
    assert.equal(failed.key, '{demo:role.reader,,0,0}')
    assert.match(String(failed.msg), /answered 403: injected failure of oauth2/)
    assert.equal(await stop(sc), 0)
  })

  test('INTERMEDIATE_CERT_BUNDLE that is not a bundle name: exit 2 naming it', () => {
    for (const bad of ['../etc', 'a/b', 'x y']) {
      const r = spawnSync(process.execPath, [CLI], {
        env: {
          PATH: process.env.PATH ?? '',
          DATA_DIR: mkdtempSync(join(tmpdir(), 'sia-')),
          INTERMEDIATE_CERT_BUNDLE: bad,
        },
        encoding: 'utf8',
        timeout: 10_000,
        killSignal: 'SIGKILL',
      })
      assert.equal(r.status, 2, r.stderr)
      assert.match(
        r.stderr,
        /^sia-supervisor: invalid setting INTERMEDIATE_CERT_BUNDLE: .* is not a CA bundle name/,
      )
    }
  })

  test('certificates issued shorter than REFRESH_INTERVAL are refreshed half-way through, not left to expire', async (t) => {
    const zts = await ztsOf(t)
    // 66 s, from a minute before the issue (as ZTS's double backdates them): due ~3 s after it.
    zts.issueFor(66_000)
    const dir = mkdtempSync(join(tmpdir(), 'sia-zts-short-'))
    const sc = await startReady({ dataDir: dir, env: ztsEnv(zts) }) // REFRESH_INTERVAL: a day
    try {
      const before = zts.counts.refresh
      await sc.waitForEvent('certificate.refresh.scheduled')
      await sc.waitFor(() => zts.counts.refresh > before, 20_000)
      const cert = new X509Certificate(readFileSync(join(dir, 'cert.pem'), 'utf8').match(PEM)![0]!)
      assert.ok(Date.parse(cert.validTo) > Date.now(), 'the certificate on disk is the refreshed one, valid')
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })
})
