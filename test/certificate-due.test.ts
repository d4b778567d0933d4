import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, it, type TestContext } from 'node:test'
import { providerEnv, startZtsDouble, type ZtsDouble } from './doubles/zts.js'
import { type Sidecar, startReady, startSidecar, stop } from './support/sidecar.js'

/** When the certificate service asks ZTS: certificates due at issue, refreshes that keep failing, a role refused at boot. */

let zts: ZtsDouble

before(async () => {
  zts = await startZtsDouble()
})
after(() => zts?.close())

/** The certificate service alone (no token server, no gateway) on the ZTS double, as pod `pod`. */
function ztsEnv(pod: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...providerEnv(zts),
    ATHENZ_DOMAIN: 'my.team',
    SERVICEACCOUNT: 'api',
    POD_UID: pod,
    TOKEN_SERVER_ADDR: '',
    GATEWAY_ADDR: '',
    DELAY_JITTER_SECONDS: '0',
    ...extra,
  }
}

/** Stopped after the test, whatever it asserted. */
function stopAfter(t: TestContext, sc: Sidecar): Sidecar {
  t.after(() => stop(sc))
  return sc
}

it('a fresh pod whose role certificate ZTS refuses starts on the instance identity it was issued, and gets the role certificate in the background', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-boot-roles-'))
  zts.failNext('rolecert', 403, 1_000) // not a member (yet)
  const sc = stopAfter(
    t,
    startSidecar({
      dataDir: dir,
      env: ztsEnv('pod-1', { TARGET_DOMAIN_ROLES: 'demo:role.reader', START_TIMEOUT: '6s' }),
    }),
  )
  const outcome = await Promise.race([
    sc.waitForEvent('supervisor.ready', {}, 30_000).then(() => 'ready'),
    sc.exited.then((e) => `exited ${e.code}`),
  ])
  assert.equal(outcome, 'ready')
  const order = sc.records
    .filter(
      (r) =>
        r.service === 'certificate' &&
        (r.event === 'certificate.refresh.failed' ||
          (r.event === 'certificate.issued' && r.kind === 'instance') ||
          r.event === 'service.start.done'),
    )
    .map((r) => r.event)
  assert.deepEqual(order, ['certificate.issued', 'certificate.refresh.failed', 'service.start.done'])
  const keyPem = readFileSync(join(dir, 'key.pem'), 'utf8')
  assert.equal(statSync(join(dir, 'key.pem')).mode & 0o777, 0o600)
  assert.ok(
    new X509Certificate(readFileSync(join(dir, 'cert.pem'))).checkPrivateKey(createPrivateKey(keyPem)),
  )

  zts.failNext('rolecert', 403, 0) // a member now: the background retry gets it
  await sc.waitForEvent('certificate.issued', { kind: 'role' }, 30_000)
  const role = new X509Certificate(readFileSync(join(dir, 'demo:role.reader.cert.pem')))
  assert.ok(role.checkPrivateKey(createPrivateKey(keyPem)), 'for the key issued at start')
  assert.equal(readFileSync(join(dir, 'key.pem'), 'utf8'), keyPem, 'no new key')
  assert.deepEqual([zts.counts.register, zts.counts.refresh], [1, 0], 'one instance issue')
  assert.equal(await stop(sc), 0)
})

it('a certificate already due when issued (over half its life gone) is refreshed again before it expires, not a REFRESH_INTERVAL later', async (t) => {
  // The double backdates a minute: [now - 60 s, now + 40 s] is past half its life at issue.
  zts.issueFor(40_000)
  const sc = stopAfter(t, await startReady({ env: ztsEnv('pod-2', { REFRESH_INTERVAL: '1h' }) }))
  const first = await sc.waitForEvent('certificate.issued', { kind: 'instance' })
  const expires = Date.parse(first.notAfter as string)
  // Waited for until just past the first certificate's end: a day's wait never issues in time.
  const second = await sc.waitForCount(
    'certificate.issued',
    2,
    { kind: 'instance' },
    expires - Date.now() + 5_000,
  )
  assert.ok(
    Date.parse(second.time) < expires,
    `reissued at ${second.time}, the first ended at ${first.notAfter}`,
  )
  assert.equal(sc.events('certificate.refresh.failed').length, 0)
})

it('a refresh that keeps failing is retried within what is left of the certificate served, not on a back-off that outgrows it', async (t) => {
  // [now - 60 s, now + 20 s]: due at once; every refresh (and register) then fails.
  zts.issueFor(20_000)
  const sc = stopAfter(t, await startReady({ env: ztsEnv('pod-3', { REFRESH_INTERVAL: '1h' }) }))
  const issued = await sc.waitForEvent('certificate.issued', { kind: 'instance' })
  const expires = Date.parse(issued.notAfter as string)
  zts.failNext('refresh', 503, 1000)
  zts.failNext('register', 503, 1000)
  // The back-off alone: 5 s, 10 s, 20 s…; the third already past the certificate's end.
  const third = await sc.waitForCount('certificate.refresh.failed', 3, {}, 30_000)
  for (const failed of sc.events('certificate.refresh.failed').slice(0, 3)) {
    const left = expires - Date.parse(failed.time)
    assert.ok(
      (failed.retryInMs as number) <= Math.max(5_000, left / 2) + 1_000,
      `retry in ${failed.retryInMs} ms with ${left} ms of the certificate left`,
    )
  }
  assert.ok(third)
})
