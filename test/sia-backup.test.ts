import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext, test } from 'node:test'
import { type CoreObject, type KubeApiDouble, startKubeApi } from './doubles/kube-api.js'
import { providerEnv, startZtsDouble, type ZtsDouble } from './doubles/zts.js'
import { CLI, type Sidecar, startReady, startSidecar, stop } from './support/sidecar.js'

const mode = (f: string) => statSync(f).mode & 0o777
const b64 = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString('utf8')

/**
 * A ZTS double, an API server double and the pod's service-account mount (token, ca.crt and
 * namespace), stopped after the test or suite `after` belongs to. Each test that sets a fault on a
 * double (failNext, deny, latency) has doubles of its own, so that the tests run side by side.
 */
interface Doubles {
  zts: ZtsDouble
  api: KubeApiDouble
  saUid: string
  env(extra: Record<string, string>): Record<string, string>
  /** A valid backup of my.team.api in payments/api-cert, as a write would have left it. */
  seedBackup(): Promise<{ certPem: string }>
  /** The settings that read that backup (BACKUP=read). */
  readBackup: Record<string, string>
  close(): Promise<void>
}

async function doubles(): Promise<Doubles> {
  const zts = await startZtsDouble()
  const api = await startKubeApi({ token: 'sa-token-1', user: 'system:serviceaccount:payments:api' })
  const saUid = api.addServiceAccount('payments', 'api')
  const sa = mkdtempSync(join(tmpdir(), 'sia-sa-'))
  writeFileSync(join(sa, 'token'), 'sa-token-1\n')
  writeFileSync(join(sa, 'ca.crt'), api.caPem)
  writeFileSync(join(sa, 'namespace'), 'payments')
  return {
    zts,
    api,
    saUid,
    readBackup: { BACKUP: 'read', CERT_SECRET: 'api-cert', NAMESPACE: 'payments', BACKUP_KUBE_API: api.url },
    env: (extra) => ({
      ...providerEnv(zts),
      ATHENZ_DOMAIN: 'my.team',
      SERVICEACCOUNT: 'api',
      BACKUP_KUBE_TOKEN_FILE: join(sa, 'token'),
      BACKUP_KUBE_CA_FILE: join(sa, 'ca.crt'),
      TOKEN_SERVER_ADDR: '',
      GATEWAY_ADDR: '',
      ...extra,
    }),
    async seedBackup() {
      const pair = await zts.issue('my.team.api')
      const data = { 'tls.crt': pair.certPem, 'tls.key': pair.keyPem }
      api.secrets.set('payments/api-cert', {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'api-cert', namespace: 'payments', uid: 'seeded' },
        type: 'kubernetes.io/tls',
        data: Object.fromEntries(
          Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
        ),
      })
      return pair
    },
    async close() {
      await zts.close()
      await api.close()
    },
  }
}

/** No key material in any log record: neither PEM nor the base64 of the secret's data. */
function assertNoKeyInLogs(sc: Sidecar, keyPem: string): void {
  const b = Buffer.from(keyPem).toString('base64')
  for (const r of sc.records) {
    const line = JSON.stringify(r)
    assert.ok(!line.includes('PRIVATE KEY'), `key in ${r.event}`)
    assert.ok(!line.includes(b.slice(100, 160)), `base64 key in ${r.event}`)
  }
}

// Each test has its doubles and its sidecar: side by side. The written-then-read pair is one
// suite, in order.
describe('BACKUP', { concurrency: 6 }, () => {
  describe('BACKUP with a secret written, then read back', { concurrency: 1 }, () => {
    // The write suite leaves the backup the read suite boots from, and its tests set faults in turn:
    // one test after the other (the suites below take this, not BACKUP's concurrency), on one pair
    // of doubles.
    let zts: ZtsDouble
    let api: KubeApiDouble
    let saUid: string
    let env: Doubles['env']
    let d: Doubles | undefined
    before(async () => {
      d = await doubles()
      ;({ zts, api, saUid, env } = d)
    })
    after(() => d?.close())

    describe('BACKUP=read+write: server-side apply of a kubernetes.io/tls secret after each issue', () => {
      const dir = mkdtempSync(join(tmpdir(), 'sia-backup-'))
      let sc: Sidecar
      const applied = () => api.applies.filter((a) => a.status === 200 || a.status === 201)

      before(async () => {
        // The service account cannot be read at first: the secret is written without an owner.
        api.deny('get', 'serviceaccounts')
        const port = new URL(api.url).port
        sc = await startReady({
          dataDir: dir,
          env: env({
            BACKUP: 'read+write',
            CERT_SECRET: 'api-cert',
            NAMESPACE: 'payments',
            // In-cluster discovery, as every Kubernetes client.
            KUBERNETES_SERVICE_HOST: '127.0.0.1',
            KUBERNETES_SERVICE_PORT: port,
            REFRESH_INTERVAL: '1500ms',
          }),
        })
      })
      after(async () => {
        api.allow('get', 'serviceaccounts')
        if (sc) {
          assert.equal(await stop(sc), 0)
          assertNoKeyInLogs(sc, readFileSync(join(dir, 'key.pem'), 'utf8'))
        }
      })

      it('applies {tls.key, tls.crt} with field manager athenz-sia-server-side-apply, force, as apply-patch+yaml', async () => {
        await sc.waitForEvent('certificate.backup.written')
        const first = api.applies[0]!
        assert.equal(first.path, '/api/v1/namespaces/payments/secrets/api-cert')
        assert.deepEqual(first.query, { fieldManager: 'athenz-sia-server-side-apply', force: 'true' })
        assert.equal(first.contentType, 'application/apply-patch+yaml')
        assert.equal(first.status, 201)
        const body = first.body as CoreObject
        assert.equal(body.apiVersion, 'v1')
        assert.equal(body.kind, 'Secret')
        assert.equal(body.type, 'kubernetes.io/tls')
        assert.deepEqual(body.metadata, { name: 'api-cert', namespace: 'payments' })
        assert.deepEqual(Object.keys(body.data ?? {}).sort(), ['tls.crt', 'tls.key'])
        const crt = new X509Certificate(b64(body.data?.['tls.crt']))
        assert.equal(crt.subject.split('\n')[0], 'CN=my.team.api')
        assert.ok(crt.checkPrivateKey(createPrivateKey(b64(body.data?.['tls.key']))))
        assert.ok(api.requests.every((r) => r.authorization === 'Bearer sa-token-1'))
        // The service account could not be read: written anyway, and said so.
        const owner = await sc.waitForEvent('certificate.backup.owner.failed')
        assert.equal(owner.level, 'warn')
        assert.match(String(owner.msg), /forbidden by RBAC: get serviceaccount payments\/api/)
      })

      it('owner-references the ServiceAccount once it can be read; each refresh applies the new certificate', async () => {
        api.allow('get', 'serviceaccounts')
        const n = applied().length
        await sc.waitFor(() => applied().length > n + 1) // the apply is after each issue, not in the refresh path
        const last = applied().at(-1)!
        const body = last.body as CoreObject
        assert.equal(last.status, 200)
        assert.deepEqual(body.metadata.ownerReferences, [
          { apiVersion: 'v1', kind: 'ServiceAccount', name: 'api', uid: saUid },
        ])
        const stored = api.secrets.get('payments/api-cert')!
        assert.deepEqual(stored.metadata.managedFields, [
          { manager: 'athenz-sia-server-side-apply', operation: 'Apply' },
        ])
        // What the secret holds is a pair that the files also held (the file may already be newer).
        const crt = new X509Certificate(b64(stored.data?.['tls.crt']))
        assert.ok(crt.checkPrivateKey(createPrivateKey(b64(stored.data?.['tls.key']))))
      })

      it('a ServiceAccount created again owns the next write: the old uid would have the secret garbage-collected', async () => {
        const uid = api.addServiceAccount('payments', 'api') // deleted and created again: a new uid
        assert.notEqual(uid, saUid)
        const n = applied().length
        await sc.waitFor(() => applied().length > n + 1) // one write may have read the account before
        const owners = (applied().at(-1)!.body as CoreObject).metadata.ownerReferences
        assert.deepEqual(owners, [{ apiVersion: 'v1', kind: 'ServiceAccount', name: 'api', uid }])
      })

      it('a write the API server cannot take now (429) is tried again after its Retry-After', async () => {
        const retries = sc.events('certificate.backup.retry').length
        const written = sc.events('certificate.backup.written').length
        api.failNext(1, 429, 2)
        const retry = await sc.waitForCount('certificate.backup.retry', retries + 1)
        assert.equal(retry.level, 'warn')
        assert.equal(retry.retryInMs, 2000)
        const next = await sc.waitFor(
          (r) =>
            r.event === 'certificate.backup.written' && sc.records.indexOf(r) > sc.records.indexOf(retry),
        )
        assert.ok(sc.events('certificate.backup.written').length > written, String(next.msg))
        assert.deepEqual(
          sc
            .events('certificate.backup.failed')
            .filter((r) => sc.records.indexOf(r) > sc.records.indexOf(retry)),
          [],
        )
      })

      it('a failed write is logged and not fatal: the refresh goes on, the next issue writes again', async () => {
        const failures = sc.events('certificate.backup.failed').length
        const refreshFailures = sc.events('certificate.refresh.failed').length
        const written = sc.events('certificate.backup.written').length
        const retries = sc.events('certificate.backup.retry').length
        api.failNext(3, 500) // the write and its two tries after 1 s and 4 s
        const failed = await sc.waitForCount('certificate.backup.failed', failures + 1)
        assert.equal(sc.events('certificate.backup.retry').length, retries + 2)
        assert.equal(failed.level, 'error')
        assert.match(String(failed.msg), /API server answered 500 InternalError: injected failure/)
        await sc.waitFor(() => sc.events('certificate.backup.written').length > written)
        assert.equal(
          sc.events('certificate.refresh.failed').length,
          refreshFailures,
          'the refresh did not fail',
        )
        assert.equal(sc.proc.exitCode, null)
      })

      it('403 from RBAC is reported as such, naming what to grant', async () => {
        const failures = sc.events('certificate.backup.failed').length
        api.deny('patch', 'secrets')
        const failed = await sc.waitForCount('certificate.backup.failed', failures + 1)
        api.allow('patch', 'secrets')
        assert.equal((failed.err as { code?: string }).code, 'ERR_KUBE_FORBIDDEN')
        assert.match(
          String(failed.msg),
          /forbidden by RBAC: apply secret payments\/api-cert: secrets "api-cert" is forbidden: User "system:serviceaccount:payments:api" cannot patch resource "secrets".*grant the pod's service account a Role with get and patch/,
        )
      })
    })

    describe('BACKUP=read: on boot with the provider down, the secret stands in', () => {
      const dir = mkdtempSync(join(tmpdir(), 'sia-backup-read-'))
      let sc: Sidecar
      let backupCert: string

      before(async () => {
        backupCert = b64(api.secrets.get('payments/api-cert')?.data?.['tls.crt'])
        assert.ok(backupCert, 'the previous suite left a backup')
        // A valid identity of another principal on disk (a persistent DATA_DIR, SERVICEACCOUNT
        // renamed): not ours, so not kept in place of the backup.
        const other = await zts.issue('other.team.api')
        writeFileSync(join(dir, 'key.pem'), other.keyPem, { mode: 0o600 })
        writeFileSync(join(dir, 'cert.pem'), other.certPem)
        zts.failNext('register', 503, 1_000_000)
        zts.failNext('refresh', 503, 1_000_000)
        sc = await startReady({
          dataDir: dir,
          // No NAMESPACE: the namespace file beside the token, as in a pod; the API server by URL.
          env: env({
            BACKUP: 'read',
            CERT_SECRET: 'api-cert',
            BACKUP_KUBE_API: api.url,
            REFRESH_INTERVAL: '4s',
            // The provider has the whole boot: 6 s, not the default 30 s, before the backup stands in.
            START_TIMEOUT: '6s',
          }),
        })
      })
      after(async () => {
        zts.failNext('register', 503, 0)
        zts.failNext('refresh', 503, 0)
        if (sc) assert.equal(await stop(sc), 0)
      })

      it('serves with the key and certificate of the secret (key 0600), and never writes it', async () => {
        await sc.waitForEvent('certificate.boot.failed')
        const restored = await sc.waitForEvent('certificate.backup.restored', { secret: 'payments/api-cert' })
        assert.equal(restored.level, 'warn')
        assert.equal(readFileSync(join(dir, 'cert.pem'), 'utf8'), backupCert)
        assert.equal(mode(join(dir, 'key.pem')), 0o600)
        const key = readFileSync(join(dir, 'key.pem'), 'utf8')
        assert.equal(key, b64(api.secrets.get('payments/api-cert')?.data?.['tls.key']))
        assert.equal(sc.events('certificate.backup.written').length, 0)
        assertNoKeyInLogs(sc, key)
      })

      it('keeps trying the provider with back-off, and replaces the backup once it issues', async () => {
        const applies = api.applies.length
        await sc.waitForCount('certificate.refresh.failed', 2, {}, 20_000)
        for (const f of sc.events('certificate.refresh.failed')) assert.ok((f.retryInMs as number) <= 1000)
        zts.failNext('register', 503, 0)
        zts.failNext('refresh', 503, 0)
        await sc.waitFor(() => readFileSync(join(dir, 'cert.pem'), 'utf8') !== backupCert, 15_000)
        const issued = new X509Certificate(readFileSync(join(dir, 'cert.pem'), 'utf8'))
        assert.equal(issued.subject.split('\n')[0], 'CN=my.team.api')
        assert.equal(api.applies.length, applies, 'BACKUP=read never writes the secret')
      })
    })
  })

  test('MODE=init, BACKUP=read, the provider down, another principal on disk: the backup is restored, exit 0', async (t) => {
    const { zts, env, seedBackup, readBackup, close } = await doubles()
    t.after(close)
    await seedBackup()
    const dataDir = mkdtempSync(join(tmpdir(), 'sia-backup-init-'))
    const other = await zts.issue('other.team.api')
    writeFileSync(join(dataDir, 'key.pem'), other.keyPem, { mode: 0o600 })
    writeFileSync(join(dataDir, 'cert.pem'), other.certPem)
    zts.failNext('register', 503, 1_000_000)
    const sc = startSidecar({
      dataDir,
      // START_TIMEOUT 4s: the provider's tries end by ~3 s, the init's deadline is 8 s.
      env: env({
        MODE: 'init',
        START_TIMEOUT: '4s',
        ...readBackup,
      }),
    })
    try {
      assert.equal((await sc.exited).code, 0)
      assert.equal(sc.events('certificate.backup.restored').length, 1)
      const cert = new X509Certificate(readFileSync(join(dataDir, 'cert.pem'), 'utf8'))
      assert.equal(cert.subject.split('\n')[0], 'CN=my.team.api')
    } finally {
      zts.failNext('register', 503, 0)
      await stop(sc)
    }
  })

  test('MODE=init, BACKUP=read, ZTS hanging: its answer is awaited until the certificate start deadline, leaving the init deadline to the backup, exit 0', async (t) => {
    const { zts, env, seedBackup, readBackup, close } = await doubles()
    t.after(close)
    await seedBackup()
    zts.delay('register', 60_000)
    // START_TIMEOUT 4s: the certificate's tries end by ~3 s, the init's deadline is 8 s (certificate
    // and token); a register attempt alone waits 10 s.
    const sc = startSidecar({
      env: env({
        MODE: 'init',
        ...readBackup,
        START_TIMEOUT: '4s',
      }),
    })
    try {
      assert.equal((await sc.exited).code, 0, JSON.stringify(sc.events('init.failed')))
      assert.equal(sc.events('certificate.backup.restored').length, 1)
      assert.deepEqual(sc.events('init.failed'), [])
    } finally {
      zts.delay('register', 0)
      await stop(sc)
    }
  })

  test("MODE=init: once ZTS has answered, what it issued gets the init's whole deadline (a slow CA bundle or role certificate), backup or not", async (t) => {
    const { zts, env, seedBackup, readBackup, close } = await doubles()
    t.after(close)
    const backup = await seedBackup()
    // START_TIMEOUT 4s: a try for a certificate ends by ~3 s, the init's deadline is 8 s. Each
    // slow step below ends in between.
    zts.delay('cacerts', 3_500)
    zts.delay('rolecert', 3_500)
    const init = (extra: Record<string, string>) => {
      const dataDir = mkdtempSync(join(tmpdir(), 'sia-backup-init-'))
      const sc = startSidecar({ dataDir, env: env({ MODE: 'init', START_TIMEOUT: '4s', ...extra }) })
      t.after(() => stop(sc))
      return { sc, dataDir }
    }
    // With a backup that could stand in: ZTS issued, its CA bundle came late. The backup's older
    // certificate took the place of the new one ZTS had just registered.
    const bundle = init({
      ...readBackup,
      INTERMEDIATE_CERT_BUNDLE: 'athenz',
    })
    // No backup: a role certificate that came late failed the init with half its deadline left.
    const roles = init({ TARGET_DOMAIN_ROLES: 'my.team:role.reader' })
    try {
      for (const { sc } of [bundle, roles])
        assert.equal((await sc.exited).code, 0, JSON.stringify(sc.events('init.failed')))
      assert.deepEqual(bundle.sc.events('certificate.backup.restored'), [], 'what ZTS issued is kept')
      const cert = new X509Certificate(readFileSync(join(bundle.dataDir, 'cert.pem'), 'utf8'))
      assert.notEqual(cert.serialNumber, new X509Certificate(backup.certPem).serialNumber)
      const role = readFileSync(join(roles.dataDir, 'my.team:role.reader.cert.pem'), 'utf8')
      assert.match(role, /BEGIN CERTIFICATE/)
    } finally {
      zts.delay('cacerts', 0)
      zts.delay('rolecert', 0)
    }
  })

  /** MODE=init with BACKUP=write to an API server that answers 15 s late. */
  async function initWritingLate(t: TestContext, startTimeout: string) {
    const { api, env, close } = await doubles()
    t.after(close)
    api.latency(15_000)
    const settings = env({
      MODE: 'init',
      BACKUP: 'write',
      CERT_SECRET: 'api-cert',
      NAMESPACE: 'payments',
      BACKUP_KUBE_API: api.url,
      START_TIMEOUT: startTimeout,
    })
    return { sc: startSidecar({ env: settings }), api }
  }

  test('MODE=init, BACKUP=write, an API server that answers late: the write in flight is abandoned at the init deadline, logged, exit 0', async (t) => {
    // START_TIMEOUT 4s: the init's deadline is 8 s, less 2 s for its answer; a write may take 20 s.
    const { sc, api } = await initWritingLate(t, '4s')
    try {
      assert.equal((await sc.exited).code, 0, JSON.stringify(sc.events('init.failed')))
      const [done, ...moreDone] = sc.events('init.done')
      const [failed, ...moreFailed] = sc.events('certificate.backup.failed')
      assert.deepEqual([moreDone, moreFailed], [[], []])
      assert.match(String(failed?.msg), /abandoned at the init deadline/)
      assert.ok(sc.records.indexOf(done!) < sc.records.indexOf(failed!))
      // Not tried again once abandoned: its retries ran into the supervisor's cut.
      assert.deepEqual(sc.events('certificate.backup.retry'), [])
      assert.deepEqual(sc.events('init.failed'), [])
    } finally {
      api.latency(0)
      await stop(sc)
    }
  })

  test('MODE=init, BACKUP=write, SIGTERM after init.done with the write in flight: it is given up at once, said so, exit 0', async (t) => {
    const { sc, api } = await initWritingLate(t, '10s')
    try {
      const done = await sc.waitForEvent('init.done', {}, 15_000)
      sc.kill('SIGTERM')
      assert.equal((await sc.exited).code, 0, JSON.stringify(sc.events('supervisor.exit')))
      const [failed, ...more] = sc.events('certificate.backup.failed')
      assert.deepEqual(more, [])
      assert.match(String(failed?.msg), /abandoned at the stop/)
      assert.ok(sc.records.indexOf(done) < sc.records.indexOf(failed!))
      assert.deepEqual(
        sc.events('supervisor.exit').map((r) => [r.code, r.cause]),
        [[0, 'init']],
      )
    } finally {
      api.latency(0)
      await stop(sc)
    }
  })

  test('a backup write still in flight at SIGTERM is abandoned at the shutdown deadline: logged, the stop clean, exit 0', async (t) => {
    const { api, env, close } = await doubles()
    t.after(close)
    const sc = await startReady({
      env: env({
        BACKUP: 'read+write',
        CERT_SECRET: 'slow-cert',
        NAMESPACE: 'payments',
        BACKUP_KUBE_API: api.url,
        REFRESH_INTERVAL: '2s',
        SHUTDOWN_TIMEOUT: '3s',
      }),
    })
    try {
      await sc.waitForEvent('certificate.backup.written')
      api.latency(15_000) // an API server that answers, 15 s late
      const n = sc.events('certificate.issued').length
      await sc.waitFor(() => sc.events('certificate.issued').length > n) // its backup write now in flight
      assert.equal(await stop(sc, 'SIGTERM'), 0)
      assert.deepEqual(sc.events('service.shutdown.timeout'), [])
      const abandoned = sc.events('certificate.backup.failed').at(-1)
      assert.match(String(abandoned?.msg), /abandoned at the shutdown deadline/)
    } finally {
      api.latency(0)
      await stop(sc)
    }
  })

  test("a 200 that is not the object (a proxy's sign-in page) is a failed write, said so; an owner read so answered keeps the uid last seen", async (t) => {
    const { api, saUid, env, close } = await doubles()
    t.after(close)
    api.impostorNext(1_000_000)
    const sc = await startReady({
      env: env({
        BACKUP: 'write',
        CERT_SECRET: 'api-cert',
        NAMESPACE: 'payments',
        BACKUP_KUBE_API: api.url,
        REFRESH_INTERVAL: '2s',
      }),
    })
    try {
      // A write is tried three times (1 s and 4 s apart): 15 s was short on a loaded machine.
      const failed = await sc.waitForEvent('certificate.backup.failed', {}, 30_000)
      assert.equal((failed.err as { code?: string }).code, 'ERR_KUBE_API')
      assert.match(
        String(failed.msg),
        /the answer 200 is not the Secret "api-cert" \(not a Kubernetes API server\?\): <html>/,
      )
      assert.deepEqual(sc.events('certificate.backup.written'), [])
      assert.ok(!api.secrets.has('payments/api-cert'), 'the page stored nothing')
      api.impostorNext(0)
      assert.equal((await sc.waitForEvent('certificate.backup.written', {}, 30_000)).ownerReference, true)
      // The next write's read of the ServiceAccount (a write each issue; not a write under way's apply).
      const owners = sc.events('certificate.backup.owner.failed').length
      api.impostorNext(1, /\/serviceaccounts\//)
      const owner = await sc.waitForCount('certificate.backup.owner.failed', owners + 1, {}, 30_000)
      assert.match(String(owner.msg), /is not the ServiceAccount "api" \(not a Kubernetes API server\?\)/)
      const written = await sc.waitFor(
        (r) => r.event === 'certificate.backup.written' && sc.records.indexOf(r) > sc.records.indexOf(owner),
        30_000,
      )
      assert.equal(written.ownerReference, true)
      const applied = api.applies.filter((a) => a.status === 200 || a.status === 201).at(-1)!
      assert.deepEqual((applied.body as CoreObject).metadata.ownerReferences, [
        { apiVersion: 'v1', kind: 'ServiceAccount', name: 'api', uid: saUid },
      ])
    } finally {
      await stop(sc)
    }
  })

  test('BACKUP=read, nothing on disk, no secret yet, ZTS slow (6 s of a 10 s start): the provider has the whole boot, ready with what it issued', async (t) => {
    const { zts, env, readBackup, close } = await doubles()
    t.after(close)
    zts.delay('register', 6_000)
    const sc = startSidecar({ env: env({ ...readBackup, START_TIMEOUT: '10s' }) })
    try {
      await sc.waitForEvent('supervisor.ready', {}, 30_000)
      await sc.waitForEvent('certificate.issued')
      assert.deepEqual(sc.events('certificate.boot.failed'), [])
      assert.deepEqual(sc.events('certificate.backup.read.failed'), [])
    } finally {
      zts.delay('register', 0)
      await stop(sc)
    }
  })

  test('BACKUP=read, nothing on disk, a ZTS blip at boot (no secret yet): the provider is retried on the boot schedule, ready', async (t) => {
    const { zts, env, readBackup, close } = await doubles()
    t.after(close)
    zts.failNext('register', 503, 3) // the ZTS client's three tries of the first boot fetch
    const sc = startSidecar({ env: env(readBackup) })
    try {
      await sc.waitForEvent('supervisor.ready', {}, 30_000)
      const retry = await sc.waitForEvent('certificate.boot.retry')
      const issued = await sc.waitForEvent('certificate.issued')
      assert.ok(sc.records.indexOf(retry) < sc.records.indexOf(issued))
      assert.deepEqual(sc.events('certificate.boot.failed'), [])
      assert.deepEqual(sc.events('certificate.backup.read.failed'), [])
    } finally {
      zts.failNext('register', 503, 0)
      await stop(sc)
    }
  })

  test('BACKUP=read, nothing on disk, ZTS hanging, an API server 3 s slow: the backup is read while the provider is asked, ready from it when the provider gives up', async (t) => {
    const { zts, api, env, seedBackup, readBackup, close } = await doubles()
    t.after(close)
    const backup = await seedBackup()
    zts.delay('register', 120_000)
    api.latency(3_000)
    // START_TIMEOUT 10s: the boot fetch, the provider's tries with it, ends by 8 s.
    const sc = startSidecar({ env: env({ ...readBackup, START_TIMEOUT: '10s' }) })
    try {
      await sc.waitForEvent('supervisor.ready', {}, 30_000)
      const failed = await sc.waitForEvent('certificate.boot.failed')
      assert.equal((failed.err as { code?: string }).code, 'ERR_PROVIDER_TIMEOUT')
      await sc.waitForEvent('certificate.backup.restored')
      assert.equal(readFileSync(join(sc.dataDir, 'cert.pem'), 'utf8'), backup.certPem)
    } finally {
      zts.delay('register', 0)
      api.latency(0)
      await stop(sc)
    }
  })

  test('BACKUP=read with the provider down and no secret: the start fails, saying so (exit 1)', async (t) => {
    const { zts, api, env, close } = await doubles()
    t.after(close)
    zts.failNext('register', 503, 1_000_000)
    const sc = startSidecar({
      env: env({
        // The provider is asked for the whole boot, the backup read beside it.
        START_TIMEOUT: '6s',
        BACKUP: 'read',
        CERT_SECRET: 'no-such-secret',
        NAMESPACE: 'payments',
        BACKUP_KUBE_API: api.url,
      }),
    })
    try {
      const failed = await sc.waitForEvent('certificate.backup.read.failed')
      assert.match(String(failed.msg), /no usable backup: there is no secret payments\/no-such-secret/)
      assert.equal((await sc.exited).code, 1)
      assert.ok(!existsSync(join(sc.dataDir, 'key.pem')))
    } finally {
      zts.failNext('register', 503, 0)
      await stop(sc)
    }
  })

  test("BACKUP=read with the provider down and KEY_FILE unwritable: the failure is the disk's, named (exit 1)", async (t) => {
    const { zts, env, seedBackup, readBackup, close } = await doubles()
    t.after(close)
    await seedBackup()
    zts.failNext('register', 503, 1_000_000)
    const blocker = join(mkdtempSync(join(tmpdir(), 'sia-backup-disk-')), 'not-a-dir')
    writeFileSync(blocker, '')
    const sc = startSidecar({
      env: env({
        // The provider is asked for the whole boot, the backup read beside it.
        START_TIMEOUT: '6s',
        ...readBackup,
        KEY_FILE: join(blocker, 'key.pem'),
      }),
    })
    try {
      const failed = await sc.waitForEvent('certificate.backup.read.failed')
      assert.match(
        String(failed.msg),
        /the certificate in payments\/api-cert is valid, but writing it to .* failed \(ENOTDIR\)/,
      )
      assert.equal((await sc.exited).code, 1)
    } finally {
      zts.failNext('register', 503, 0)
      await stop(sc)
    }
  })

  test('BACKUP=read refused by RBAC on get: reported as forbidden by RBAC (exit 1)', async (t) => {
    const { zts, api, env, close } = await doubles()
    t.after(close)
    zts.failNext('register', 503, 1_000_000)
    api.deny('get', 'secrets')
    const sc = startSidecar({
      env: env({
        // The provider is asked for the whole boot, the backup read beside it.
        START_TIMEOUT: '6s',
        BACKUP: 'read',
        CERT_SECRET: 'api-cert',
        NAMESPACE: 'payments',
        BACKUP_KUBE_API: api.url,
      }),
    })
    try {
      const failed = await sc.waitForEvent('certificate.backup.read.failed')
      assert.match(
        String(failed.msg),
        /no usable backup: forbidden by RBAC: get secret payments\/api-cert: secrets "api-cert" is forbidden: User "system:serviceaccount:payments:api" cannot get/,
      )
      assert.equal((await sc.exited).code, 1)
    } finally {
      api.allow('get', 'secrets')
      zts.failNext('register', 503, 0)
      await stop(sc)
    }
  })

  test('invalid backup settings: exit 2 naming the setting, nothing started', async () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ BACKUP: 'sometimes' }, /BACKUP: /],
      [{ BACKUP: 'read', KUBERNETES_SERVICE_HOST: '10.0.0.1' }, /CERT_SECRET: required with BACKUP=read/],
      [
        { BACKUP: 'write', CERT_SECRET: 'Bad_Name', KUBERNETES_SERVICE_HOST: '10.0.0.1' },
        /CERT_SECRET: "Bad_Name" is not a valid secret name/,
      ],
      [
        { BACKUP: 'read+write', CERT_SECRET: 'ok' },
        /BACKUP_KUBE_API: required with BACKUP outside a cluster/,
      ],
      [
        { BACKUP: 'read', CERT_SECRET: 'ok', BACKUP_KUBE_API: 'http://10.0.0.1' },
        /BACKUP_KUBE_API: .*not an https:\/\/ URL/,
      ],
      [{ NAMESPACE: 'Bad_NS' }, /NAMESPACE: /],
      [
        // No NAMESPACE and no namespace file beside the token file (outside a pod).
        {
          BACKUP: 'read',
          CERT_SECRET: 'ok',
          BACKUP_KUBE_API: 'https://10.0.0.1',
          BACKUP_KUBE_TOKEN_FILE: '/nonexistent/token',
        },
        /NAMESPACE: required with BACKUP when there is no namespace file beside \/nonexistent\/token/,
      ],
    ]
    // Side by side, and not spawnSync: the doubles the other tests' sidecars talk to serve from
    // this thread's loop.
    await Promise.all(
      cases.map(async ([e, reason]) => {
        const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
          execFile(
            process.execPath,
            [CLI],
            {
              env: { PATH: process.env.PATH ?? '', DATA_DIR: mkdtempSync(join(tmpdir(), 'sia-')), ...e },
              encoding: 'utf8',
              timeout: 30_000, // seven at once, beside the other tests' sidecars
              killSignal: 'SIGKILL',
            },
            (err, stdout, stderr) => resolve({ status: err ? (err.code as number) : 0, stdout, stderr }),
          )
        })
        assert.equal(r.status, 2, `${JSON.stringify(e)}: ${r.stderr}`)
        assert.equal(r.stdout, '')
        assert.match(r.stderr, /^sia-supervisor: invalid setting /)
        assert.match(r.stderr, reason)
      }),
    )
  })
})
