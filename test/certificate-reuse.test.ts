import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { providerEnv, startZtsDouble } from './doubles/zts.js'
import { startReady, stop } from './support/sidecar.js'

const ROLES = 'demo:role.reader'

async function boot(dataDir: string, refresh = '1h', env: Record<string, string> = {}) {
  const sc = await startReady({
    dataDir,
    env: {
      DELAY_JITTER_SECONDS: '0',
      ...env,
      TARGET_DOMAIN_ROLES: ROLES,
      REFRESH_INTERVAL: refresh,
      GATEWAY_ADDR: '',
      METRICS_SERVER_ADDR: '',
    },
  })
  assert.equal(await stop(sc), 0)
  return sc
}

// Each test has a data directory and sidecars of its own: three at a time.
describe('the identity on disk at start', { concurrency: 3 }, () => {
  test('boot jitter before a fetch; a restart within REFRESH_INTERVAL reuses the fresh identity on disk; a stale or partial one is refreshed', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    const key = () => readFileSync(join(dataDir, 'key.pem'), 'utf8')
    const roleCert = join(dataDir, `${ROLES}.cert.pem`)

    const jitter = { DELAY_JITTER_SECONDS: '1' }
    const first = await boot(dataDir, '1h', jitter)
    assert.equal(first.events('certificate.reused').length, 0, 'nothing to reuse on a first boot')
    // DELAY_JITTER_SECONDS, as SIA: a random delay before the boot fetch, then the fetch.
    const delayed = first.events('certificate.boot.delayed')
    assert.equal(delayed.length, 1)
    assert.ok((delayed[0]!.ms as number) >= 0 && (delayed[0]!.ms as number) < 1000)
    const at = (r: unknown) => first.records.indexOf(r as (typeof first.records)[number])
    assert.ok(at(delayed[0]) < at(first.events('certificate.issued')[0]), 'the delay comes before the fetch')
    const firstKey = key()

    const second = await boot(dataDir, '1h', jitter)
    assert.equal(second.events('certificate.reused').length, 1)
    assert.equal(second.events('certificate.issued').length, 0, 'no new certificate')
    assert.equal(second.events('certificate.boot.delayed').length, 0, 'no fetch, so no delay')
    assert.equal(key(), firstKey, 'the key was not rotated')

    rmSync(roleCert) // a role certificate missing: the identity is not complete, refresh at start
    const third = await boot(dataDir)
    assert.equal(third.events('certificate.reused').length, 0)
    assert.notEqual(key(), firstKey)
    assert.ok(readFileSync(roleCert, 'utf8').includes('BEGIN CERTIFICATE'))

    const fourth = await boot(dataDir, '1s') // issued more than REFRESH_INTERVAL ago: due
    assert.equal(fourth.events('certificate.reused').length, 0)
  })

  test('reused, the identity is written to every KEY_FILE/CERT_FILE path that does not hold it (an emptyDir wiped)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    const copy = mkdtempSync(join(tmpdir(), 'sia-reuse-copy-'))
    const paths = {
      KEY_FILE: `${join(dataDir, 'key.pem')},${join(copy, 'key.pem')}`,
      CERT_FILE: `${join(dataDir, 'cert.pem')},${join(copy, 'cert.pem')}`,
    }
    await boot(dataDir, '1h', paths)
    const key = readFileSync(join(dataDir, 'key.pem'), 'utf8')
    rmSync(copy, { recursive: true }) // the second volume comes back empty
    const again = await boot(dataDir, '1h', paths)
    assert.equal(again.events('certificate.reused').length, 1)
    assert.equal(again.events('certificate.outputs.written').length, 1)
    assert.equal(readFileSync(join(copy, 'key.pem'), 'utf8'), key)
    assert.equal(
      readFileSync(join(copy, 'cert.pem'), 'utf8'),
      readFileSync(join(dataDir, 'cert.pem'), 'utf8'),
    )
    assert.equal(statSync(join(copy, 'key.pem')).mode & 0o777, 0o600)
    const third = await boot(dataDir, '1h', paths)
    assert.deepEqual(third.events('certificate.outputs.written'), [], 'every path holds it: nothing written')
  })

  test("reused, a role certificate's key file (ROLE_CERT_KEY_FILE_OUTPUT) that does not hold the key is written; a CA file missing is issued anew", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    const keys = { ROLE_CERT_KEY_FILE_OUTPUT: 'true' }
    await boot(dataDir, '1h', keys)
    const roleKey = join(dataDir, `${ROLES}.key.pem`)
    const key = readFileSync(join(dataDir, 'key.pem'), 'utf8')
    assert.equal(readFileSync(roleKey, 'utf8'), key)
    rmSync(roleKey)
    const again = await boot(dataDir, '1h', keys)
    assert.equal(again.events('certificate.reused').length, 1)
    assert.equal(again.events('certificate.outputs.written').length, 1)
    assert.equal(readFileSync(roleKey, 'utf8'), key, 'the role key file is back')
    assert.equal(statSync(roleKey).mode & 0o777, 0o600)
    // A CA file deleted (or CA_CERT_FILE set to a new path) comes only with an issue.
    rmSync(join(dataDir, 'ca.pem'))
    const third = await boot(dataDir, '1h', keys)
    assert.deepEqual(third.events('certificate.reused'), [])
    assert.match(readFileSync(join(dataDir, 'ca.pem'), 'utf8'), /BEGIN CERTIFICATE/)
    const fourth = await boot(dataDir, '1h', keys)
    assert.equal(fourth.events('certificate.reused').length, 1, 'and reused again from then on')
    assert.deepEqual(fourth.events('certificate.outputs.written'), [])
  })

  test('a role certificate that keeps failing is retried alone: one new key, not one a back-off', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    const roleCert = join(dataDir, `${ROLES}.cert.pem`)
    await boot(dataDir)
    rmSync(roleCert)
    mkdirSync(roleCert) // a directory where the role certificate goes: every write of it fails
    const sc = await startReady({
      dataDir,
      env: {
        TARGET_DOMAIN_ROLES: ROLES,
        // Not due for two minutes (the local authority backdates a certificate by one): the
        // retries, 5 s then 10 s apart, come well within it.
        REFRESH_INTERVAL: '3m',
        GATEWAY_ADDR: '',
        METRICS_SERVER_ADDR: '',
      },
    })
    try {
      const issued = () => sc.events('certificate.issued').filter((r) => r.kind === 'instance').length
      const keys = issued()
      await sc.waitForCount('certificate.role.failed', 2, {}, 20_000) // at start, then its retry
      assert.equal(issued(), keys, 'no new key for a retry of the role certificate')
      rmdirSync(roleCert)
      await sc.waitForEvent('certificate.refresh.recovered', {}, 30_000)
      assert.equal(issued(), keys)
      const key = createPrivateKey(readFileSync(join(dataDir, 'key.pem')))
      assert.ok(new X509Certificate(readFileSync(roleCert)).checkPrivateKey(key), 'for the key in use')
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  test('a role certificate on disk for another key is not reused: refreshed at start', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    const other = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    const roleCert = (dir: string) => join(dir, `${ROLES}.cert.pem`)
    await boot(dataDir)
    await boot(other)
    // What a role certificate that failed after the key was renewed leaves: a fresh one, for the
    // previous key.
    writeFileSync(roleCert(dataDir), readFileSync(roleCert(other)))
    const again = await boot(dataDir)
    assert.equal(again.events('certificate.reused').length, 0)
    const key = createPrivateKey(readFileSync(join(dataDir, 'key.pem')))
    assert.ok(new X509Certificate(readFileSync(roleCert(dataDir))).checkPrivateKey(key))
  })

  test('the identity on disk is not reused for another principal (SERVICEACCOUNT or ATHENZ_DOMAIN changed)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    const cn = () =>
      new X509Certificate(readFileSync(join(dataDir, 'cert.pem'))).subject.match(/^CN=(.*)$/m)?.[1]
    await boot(dataDir, '1h', { SERVICEACCOUNT: 'api' })
    assert.equal(cn(), 'sia.local.api')
    const renamed = await boot(dataDir, '1h', { SERVICEACCOUNT: 'worker' })
    assert.equal(renamed.events('certificate.reused').length, 0)
    assert.equal(cn(), 'sia.local.worker')
    const same = await boot(dataDir, '1h', { SERVICEACCOUNT: 'worker' })
    assert.equal(same.events('certificate.reused').length, 1, 'the same principal still reuses it')
  })

  test('the identity on disk is not reused once another provider is configured (ENDPOINT set, or cleared)', async (t) => {
    const zts = await startZtsDouble()
    t.after(() => zts.close())
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    // Both authorities have the same name (the double is made of the local authority's code):
    // which one signed is which one's key verifies.
    const issuer = () =>
      new X509Certificate(readFileSync(join(dataDir, 'cert.pem'))).verify(
        new X509Certificate(zts.caPem).publicKey,
      )
        ? 'zts'
        : 'local'
    await boot(dataDir)
    assert.equal(issuer(), 'local')
    const toZts = await boot(dataDir, '1h', providerEnv(zts))
    assert.equal(toZts.events('certificate.reused').length, 0)
    assert.equal(zts.counts.register, 1, 'registered at ZTS')
    assert.equal(issuer(), 'zts')
    const stays = await boot(dataDir, '1h', providerEnv(zts))
    assert.equal(stays.events('certificate.reused').length, 1, 'the same provider still reuses it')
    const back = await boot(dataDir)
    assert.equal(back.events('certificate.reused').length, 0)
    assert.equal(issuer(), 'local', 'the local authority issued it again')
  })

  test('an unreadable local authority certificate does not fail the start: the authority is made anew, the identity issued again', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    await boot(dataDir)
    writeFileSync(join(dataDir, 'authority', 'ca.cert.pem'), '')
    const again = await boot(dataDir) // stop() asserts exit 0
    assert.equal(again.events('certificate.reused').length, 0)
    const ca = new X509Certificate(readFileSync(join(dataDir, 'authority', 'ca.cert.pem')))
    assert.ok(new X509Certificate(readFileSync(join(dataDir, 'cert.pem'))).verify(ca.publicKey))
  })

  // REFRESH_INTERVAL=0 turns the periodic refresh off, not the retries of a boot that failed. The
  // two wait out the same 5 s back-off, side by side.
  describe('the back-off at start, with and without a REFRESH_INTERVAL', { concurrency: 2 }, () => {
    for (const interval of ['24h', '0']) {
      test(`a refresh that fails at start is retried on the back-off schedule, not a REFRESH_INTERVAL (${interval}) later`, async (t) => {
        const zts = await startZtsDouble()
        t.after(() => zts.close())
        const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
        const env = {
          ...providerEnv(zts),
          GATEWAY_ADDR: '',
          METRICS_SERVER_ADDR: '',
          REFRESH_INTERVAL: interval,
        }
        const first = await startReady({ dataDir, env })
        assert.equal(await stop(first), 0)
        // A role added: the identity on disk is not complete, and its role certificate fails at start
        // (every try of the client).
        zts.failNext('rolecert', 503, 3)
        const sc = await startReady({ dataDir, env: { ...env, TARGET_DOMAIN_ROLES: ROLES } })
        t.after(() => stop(sc, 'SIGKILL'))
        assert.equal(sc.events('certificate.refresh.failed').length, 1, 'kept the identity on disk')
        // The first retry comes 3.75 to 5 s later (5 s less jitter; with no interval too, not a
        // millisecond later), and the role certificate is issued.
        const issued = await sc.waitForEvent('certificate.issued', { kind: 'role' }, 20_000)
        assert.equal(issued.kind, 'role')
        const failedAt = Date.parse(sc.events('certificate.refresh.failed')[0]!.time)
        assert.ok(
          Date.parse(issued.time) - failedAt >= 3_500,
          `retried ${Date.parse(issued.time) - failedAt}ms later`,
        )
        assert.ok(readFileSync(join(dataDir, `${ROLES}.cert.pem`), 'utf8').includes('BEGIN CERTIFICATE'))
        if (interval !== '0') {
          // Then back on the schedule: the back-off is not kept (every refresh 5 s apart, a new key
          // each). Due half-way through the hour the double issues for, sooner than the day.
          const recovered = await sc.waitForEvent('certificate.refresh.recovered')
          assert.equal(recovered.failures, 1)
          const next = recovered.nextInMs as number
          assert.ok(next > 1_700_000 && next <= 1_800_000, `next refresh in ${next}ms`)
        }
        assert.equal(await stop(sc), 0)
      })
    }
  })

  test('the local authority deleted while running: said, made anew, and the token service signs with the new one, cached tokens too', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-reuse-'))
    const tokenFile = join(dataDir, 'tokens', `${ROLES}.accesstoken`)
    const sc = await startReady({
      dataDir,
      env: {
        REFRESH_INTERVAL: '2s',
        TARGET_DOMAIN_ROLES: ROLES,
        TOKEN_TYPE: 'accesstoken',
        TOKEN_DIR: join(dataDir, 'tokens'),
      },
    })
    try {
      const keys = async () =>
        (
          (await (await fetch(`${await sc.url('token')}/oauth2/keys`)).json()) as {
            keys: { n: string; kid: string }[]
          }
        ).keys
      const jwks = async () => (await keys())[0]!.n
      const kid = (jwt: string) =>
        (JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid
      const asked = async () =>
        (
          (await (
            await fetch(`${await sc.url('token')}/accesstoken`, {
              method: 'POST',
              body: JSON.stringify({ domain: 'demo', role: 'cached' }),
            })
          ).json()) as { access_token: string }
        ).access_token
      const cachedBefore = await asked()
      assert.equal(await asked(), cachedBefore, 'the token is cached')
      const caKey = () =>
        new X509Certificate(readFileSync(join(dataDir, 'authority', 'ca.cert.pem'))).publicKey.export({
          format: 'jwk',
        }).n as string
      const before = await jwks()
      assert.equal(before, caKey())
      rmSync(join(dataDir, 'authority'), { recursive: true })
      const changed = await sc.waitForEvent('certificate.authority.changed', {}, 15_000)
      assert.equal(changed.level, 'warn')
      // The certificate issued from it is written next.
      const ca = new X509Certificate(readFileSync(join(dataDir, 'authority', 'ca.cert.pem')))
      await sc.waitFor(() =>
        new X509Certificate(readFileSync(join(dataDir, 'cert.pem'))).verify(ca.publicKey),
      )
      assert.notEqual(caKey(), before)
      assert.equal(await jwks(), caKey(), 'the JWKS is the new authority’s')
      // What the old key signed is no longer served: not the cached token, not the target's file.
      const cleared = await sc.waitForEvent('token.cache.cleared')
      assert.equal(cleared.level, 'warn')
      const current = (await keys()).map((k) => k.kid)
      assert.ok(current.includes(kid(await asked())), 'the token asked for again verifies against the JWKS')
      await sc.waitFor(() => current.includes(kid(readFileSync(tokenFile, 'utf8'))))
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })
})
