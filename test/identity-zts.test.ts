import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { type Sidecar, startReady, stop } from '../test/support/sidecar.js'
import { providerEnv, startZtsDouble, type ZtsDouble } from './doubles/zts.js'

let zts: ZtsDouble
let sc: Sidecar
let base: string
const dir = mkdtempSync(join(tmpdir(), 'sia-zts-'))
const serial = (f: string) => new X509Certificate(readFileSync(f)).serialNumber

async function post(path: string, body: unknown) {
  const res = await fetch(`${base}${path}`, { method: 'POST', body: JSON.stringify(body) })
  return { status: res.status, json: (await res.json()) as Record<string, unknown> }
}

before(async () => {
  zts = await startZtsDouble()
  sc = await startReady({
    dataDir: dir,
    env: {
      ...providerEnv(zts),
      ATHENZ_DOMAIN: 'my.team',
      SERVICEACCOUNT: 'api',
      DNS_SUFFIX: 'zts.test',
      POD_IP: '10.0.0.7',
      POD_UID: 'pod-9',
      TARGET_DOMAIN_ROLES: 'demo:role.reader',
      TOKEN_DIR: join(dir, 'tokens'),
      TOKEN_EXPIRY: '2h',
      REFRESH_INTERVAL: '3s',
      TOKEN_SERVER_TIMEOUT: '1s',
      DELETE_INSTANCE_ID: 'true',
    },
  })
  base = await sc.url('token')
})

after(async () => {
  if (sc) await stop(sc)
  await zts?.close()
})

/** token_fetch_errors_total, every type. */
async function fetchErrors(): Promise<number> {
  const text = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
  return [...text.matchAll(/^token_fetch_errors_total\{[^}]*\} (\d+)/gm)].reduce(
    (n, m) => n + Number(m[1]),
    0,
  )
}

describe('zts provider against the ZTS double', () => {
  it('registers the instance with the CSR SIA builds', () => {
    assert.equal(zts.counts.register, 1)
    const reg = zts.received.find((r) => r.route === 'register')!
    assert.equal(reg.clientCN, undefined) // register is authenticated by attestation, not a cert
    assert.deepEqual(reg.body, {
      ...(reg.body as object),
      provider: 'athenz.k8s',
      domain: 'my.team',
      service: 'api',
    })
    assert.deepEqual(reg.csr!.subject, { CN: 'my.team.api', OU: 'Athenz', C: 'US' })
    assert.deepEqual(reg.csr!.dnsNames, [
      'api.my-team.zts.test',
      '*.api.my-team.zts.test',
      'pod-9.instanceid.athenz.zts.test',
    ])
    assert.deepEqual(reg.csr!.uris, ['spiffe://my.team/sa/api', 'athenz://instanceid/athenz.k8s/pod-9'])
    assert.deepEqual(reg.csr!.ips, ['10.0.0.7'])
  })

  it('writes the identity and role certificate issued by ZTS with their modes', () => {
    assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600)
    assert.equal(statSync(join(dir, 'cert.pem')).mode & 0o777, 0o644)
    assert.equal(readFileSync(join(dir, 'ca.pem'), 'utf8'), zts.caPem)
    const role = new X509Certificate(readFileSync(join(dir, 'demo:role.reader.cert.pem')))
    assert.ok(role.verify(new X509Certificate(zts.caPem).publicKey))
    const rc = zts.received.find((r) => r.route === 'rolecert')!
    assert.equal(rc.clientCN, 'my.team.api') // over mutual TLS with the new service cert
    assert.equal(rc.csr!.commonName, 'demo:role.reader')
    assert.deepEqual(rc.csr!.uris, ['spiffe://demo/ra/reader'])
  })

  it('fetches target tokens from ZTS over mutual TLS into TOKEN_DIR', () => {
    const at = readFileSync(join(dir, 'tokens', 'demo:role.reader.accesstoken'), 'utf8')
    assert.match(at, /^[\w-]+\.[\w-]+\.[\w-]+$/)
    const oauth = zts.received.find((r) => r.route === 'oauth2')!
    assert.equal(oauth.clientCN, 'my.team.api')
    assert.deepEqual(oauth.body, {
      grant_type: 'client_credentials',
      scope: 'demo:role.reader',
      expires_in: '7200',
    })
    assert.match(
      readFileSync(join(dir, 'tokens', 'demo:role.reader.roletoken'), 'utf8'),
      /^v=Z1;d=demo;r=reader;/,
    )
  })

  it('TOKEN_EXPIRY as SIA asks ZTS (the least lifetime of a role token); a request naming none gets the token of the target', async () => {
    const target = zts.received.find((r) => r.route === 'roletoken')!
    assert.deepEqual(target.body, { role: 'reader', minExpiryTime: '7200' })
    const calls = { ...zts.counts }
    const files = {
      accesstoken: readFileSync(join(dir, 'tokens', 'demo:role.reader.accesstoken'), 'utf8'),
      roletoken: readFileSync(join(dir, 'tokens', 'demo:role.reader.roletoken'), 'utf8'),
    }
    assert.equal(
      (await post('/accesstoken', { domain: 'demo', role: 'reader' })).json.access_token,
      files.accesstoken,
    )
    assert.equal((await post('/roletoken', { domain: 'demo', role: 'reader' })).json.token, files.roletoken)
    const header = await fetch(`${base}/`, {
      headers: { 'X-Athenz-Domain': 'demo', 'X-Athenz-Role': 'reader' },
    })
    assert.deepEqual(await header.json(), files)
    assert.equal(zts.counts.oauth2, calls.oauth2, 'no second access token for the target')
    assert.equal(zts.counts.roletoken, calls.roletoken, 'no second role token for the target')
    // A request's own bounds go to ZTS as they are.
    assert.equal(
      (await post('/roletoken', { domain: 'demo', role: 'bounded', min_expiry: 600, max_expiry: 900 }))
        .status,
      200,
    )
    assert.deepEqual(zts.received.at(-1)!.body, {
      role: 'bounded',
      minExpiryTime: '600',
      maxExpiryTime: '900',
    })
    // Any whole number a client asks goes as the longest ZTS reads (32 bits), which ZTS caps.
    const huge = await post('/accesstoken', { domain: 'demo', role: 'long', expiry: 1e300 })
    assert.equal(huge.status, 200, JSON.stringify(huge.json))
    assert.equal((zts.received.at(-1)!.body as Record<string, string>).expires_in, String(2 ** 31 - 1))
    const cap = 30 * 24 * 3600 // ZTS's, less what has passed since
    assert.ok([cap - 1, cap].includes(Number(huge.json.expires_in)), String(huge.json.expires_in))
    const role = await post('/roletoken', {
      domain: 'demo',
      role: 'long',
      min_expiry: 2 ** 31,
      max_expiry: 1e300,
    })
    assert.equal(role.status, 200, JSON.stringify(role.json))
    assert.deepEqual(zts.received.at(-1)!.body, {
      role: 'long',
      minExpiryTime: String(2 ** 31 - 1),
      maxExpiryTime: String(2 ** 31 - 1),
    })
  })

  it('coalesces concurrent requests for one key into one ZTS call', async () => {
    const before = zts.counts.oauth2
    const replies = await Promise.all(
      Array.from({ length: 10 }, () => post('/accesstoken', { domain: 'demo', role: 'burst' })),
    )
    assert.ok(replies.every((r) => r.status === 200))
    assert.equal(new Set(replies.map((r) => r.json.access_token)).size, 1)
    assert.equal(zts.counts.oauth2, before + 1)
  })

  it('answers 502 when ZTS fails and 503 when it is slower than TOKEN_SERVER_TIMEOUT', async () => {
    zts.failNext('oauth2', 500, 3) // every retry of the client
    const failed = await post('/accesstoken', { domain: 'demo', role: 'down' })
    assert.equal(failed.status, 502)
    assert.match(String(failed.json.detail), /answered 500/)
    zts.delay('roletoken', 2_000)
    const slow = await post('/roletoken', { domain: 'demo', role: 'slow' })
    zts.delay('roletoken', 0)
    assert.equal(slow.status, 503)
  })

  it("what ZTS refuses for the client's asking (no such role, not a member) is answered with its status, not counted a fetch failure; its 401 is a 502", async () => {
    const before = await fetchErrors()
    for (const [route, status, path] of [
      ['roletoken', 403, '/roletoken'],
      ['oauth2', 404, '/accesstoken'],
      ['oauth2', 400, '/accesstoken'],
    ] as const) {
      zts.failNext(route, status, 1)
      const r = await post(path, { domain: 'other', role: `refused-${status}` })
      assert.equal(r.status, status, `${route} ${status}`)
      assert.match(String(r.json.detail), new RegExp(`answered ${status}`))
    }
    assert.equal(
      await fetchErrors(),
      before,
      'the client asked for what it may not have: no provider failure',
    )
    zts.failNext('oauth2', 401, 1) // our certificate refused: ours to fix
    const ours = await post('/accesstoken', { domain: 'demo', role: 'unauthenticated' })
    assert.equal(ours.status, 502)
    assert.equal(await fetchErrors(), before + 1)
    // A 404 that is not ZTS's error (a proxy's page: ENDPOINT with a wrong path) refuses nothing
    // the client asked for: the provider failed.
    zts.answerNext('oauth2', '<html>Not Found</html>', 'text/html', 404)
    const page = await post('/accesstoken', { domain: 'demo', role: 'wrong-endpoint' })
    assert.equal(page.status, 502)
    assert.equal(await fetchErrors(), before + 2)
  })

  it('a 2xx from ZTS that is not a token is a failure of the provider: 502, counted, never cached', async () => {
    const before = await fetchErrors()
    // A page that is not JSON is no answer at all: tried again, as a 5xx is, and the retry answers.
    const asked = zts.counts.roletoken
    zts.answerNext('roletoken', '<html>Sign in</html>', 'text/html')
    const page = await post('/roletoken', { domain: 'demo', role: 'behind-a-proxy' })
    assert.equal(page.status, 200)
    assert.equal(zts.counts.roletoken, asked + 2)
    // A JSON answer that is no token is ZTS's answer: not retried, a 502.
    zts.answerNext('roletoken', JSON.stringify({ message: 'hello' }))
    const notToken = await post('/roletoken', { domain: 'demo', role: 'not-a-token' })
    assert.equal(notToken.status, 502)
    assert.match(String(notToken.json.detail), /without a role token/)
    zts.answerNext('oauth2', JSON.stringify({ access_token: 'aaa.bbb.ccc', token_type: 'Bearer' }))
    const noExpiry = await post('/accesstoken', { domain: 'demo', role: 'no-expiry' })
    assert.equal(noExpiry.status, 502)
    // A role token already expired by this host's clock (ZTS's ahead): no token to serve.
    const past = Math.floor(Date.now() / 1000) - 100
    zts.answerNext('roletoken', JSON.stringify({ token: 'RT-EXPIRED', expiryTime: past }))
    const expired = await post('/roletoken', { domain: 'demo', role: 'expired' })
    assert.equal(expired.status, 502)
    assert.match(String(expired.json.detail), /role token that expired at/)
    assert.equal(await fetchErrors(), before + 3)
    // Asked again, ZTS answers a token: it was not cached.
    const n = zts.counts.oauth2
    const again = await post('/accesstoken', { domain: 'demo', role: 'no-expiry' })
    assert.equal(again.status, 200)
    assert.equal(typeof again.json.expires_in, 'number')
    assert.equal(zts.counts.oauth2, n + 1)
  })

  it('refreshes over mutual TLS, announcing the new identity to the token service', async () => {
    await sc.waitFor(() => zts.counts.refresh >= 1)
    const refresh = zts.received.find((r) => r.route === 'refresh')!
    assert.equal(refresh.clientCN, 'my.team.api')
    const n = sc.events('token.identity.updated').length
    await sc.waitFor(() => sc.events('token.identity.updated').length > n)
    const current = serial(join(dir, 'cert.pem'))
    assert.equal((await post('/accesstoken', { domain: 'demo', role: 'after-refresh' })).status, 200)
    const last = zts.received.filter((r) => r.route === 'oauth2').at(-1)!
    // The certificate just announced, unless yet another refresh slipped in meanwhile.
    assert.ok([current, serial(join(dir, 'cert.pem'))].includes(last.clientSerial!))
    assert.notEqual(last.clientSerial, zts.received.find((r) => r.route === 'oauth2')!.clientSerial)
  })

  it('keeps the good certificate when ZTS fails or answers a certificate for another key, and backs off', async () => {
    const good = readFileSync(join(dir, 'cert.pem'), 'utf8')
    const n = sc.events('certificate.refresh.failed').length
    zts.wrongKeyNext('refresh')
    await sc.waitFor(() => sc.events('certificate.refresh.failed').length > n)
    assert.equal(readFileSync(join(dir, 'cert.pem'), 'utf8'), good)
    const failure = sc.events('certificate.refresh.failed').at(-1)!
    assert.equal((failure.err as { code?: string }).code, 'ERR_BAD_CERT')
    assert.ok((failure.retryInMs as number) <= 750) // capped at REFRESH_INTERVAL/4
    // Refresh and its fallback, a fresh register, both down (each after its retries).
    zts.failNext('refresh', 503, 3)
    zts.failNext('register', 503, 3)
    await sc.waitFor(() => sc.events('certificate.refresh.failed').length > n + 1)
    assert.equal(readFileSync(join(dir, 'cert.pem'), 'utf8'), good)
    // After the failures a retry succeeds without waiting for the next interval.
    await sc.waitFor(() => readFileSync(join(dir, 'cert.pem'), 'utf8') !== good, 3_000)
  })

  it('a role certificate that fails does not keep the token service on the identity it replaced', async () => {
    const from = sc.records.length
    const roleFailures = () =>
      sc.records.flatMap((r, i) =>
        i >= from &&
        r.event === 'certificate.refresh.failed' &&
        (r.err as { code?: string }).code === 'ERR_ROLE_CERTS'
          ? [i]
          : [],
      )
    zts.failNext('rolecert', 403, 1_000_000)
    try {
      await sc.waitFor(() => roleFailures().length >= 2)
    } finally {
      zts.failNext('rolecert', 403, 0)
    }
    // The second attempt began after the first had failed: its new instance certificate (on disk
    // when its role certificate failed) reached the token service all the same.
    const [first, second] = roleFailures()
    const between = sc.records.slice(first! + 1, second).map((r) => r.event)
    assert.ok(between.includes('certificate.issued'), between.join())
    assert.ok(between.includes('token.identity.updated'), between.join())
    // Once the role certificate is issued again, the refresh succeeds as a whole.
    const ok = sc.events('certificate.issued').filter((r) => r.kind === 'role').length
    await sc.waitFor(() => sc.events('certificate.issued').filter((r) => r.kind === 'role').length > ok)
  })

  it('never logs a token', () => {
    const tokens = [
      readFileSync(join(dir, 'tokens', 'demo:role.reader.accesstoken'), 'utf8'),
      readFileSync(join(dir, 'tokens', 'demo:role.reader.roletoken'), 'utf8'),
    ]
    for (const r of sc.records) {
      const line = JSON.stringify(r)
      for (const t of tokens) assert.ok(!line.includes(t.slice(-40)), `token in ${r.event}`)
      assert.ok(!line.includes('PRIVATE KEY'), `key in ${r.event}`)
    }
  })

  it('a reload replaces the certificate thread without deleting the instance record', async () => {
    const n = sc.events('supervisor.reload.done').length
    sc.kill('SIGHUP')
    await sc.waitFor(() => sc.events('supervisor.reload.done').length > n)
    const certificate = sc.events('supervisor.reload.done').at(-1)!.outcomes as {
      service: string
      outcome: string
    }[]
    assert.equal(certificate.find((o) => o.service === 'certificate')?.outcome, 'replaced')
    // The predecessor drains in the background: its cleanups have run once it is said replaced.
    await sc.waitForEvent('worker.replaced', { service: 'certificate' })
    assert.equal(zts.counts.delete, 0)
    assert.deepEqual(sc.events('certificate.instance.deleted'), [])
  })

  it('deletes the instance at ZTS on shutdown when DELETE_INSTANCE_ID is set', async () => {
    assert.equal(await stop(sc), 0)
    assert.equal(zts.counts.delete, 1)
    assert.equal(zts.received.find((r) => r.route === 'delete')!.clientCN, 'my.team.api')
  })
})
