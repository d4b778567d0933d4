import assert from 'node:assert/strict'
import { after, before, it } from 'node:test'
import { providerEnv, startZtsDouble, type ZtsDouble } from './doubles/zts.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

let zts: ZtsDouble
let sc: Sidecar | undefined

before(async () => {
  zts = await startZtsDouble()
})
after(async () => {
  if (sc) await stop(sc)
  await zts?.close()
})

it('a certificate already due when issued (over half its life gone) is refreshed again before it expires, not a REFRESH_INTERVAL later', async () => {
  // The double backdates a minute: [now - 60 s, now + 40 s] is past half its life at issue.
  zts.issueFor(40_000)
  sc = await startReady({
    env: {
      ...providerEnv(zts),
      ATHENZ_DOMAIN: 'my.team',
      SERVICEACCOUNT: 'api',
      POD_UID: 'pod-1',
      TOKEN_SERVER_ADDR: '',
      GATEWAY_ADDR: '',
      REFRESH_INTERVAL: '1h',
      DELAY_JITTER_SECONDS: '0',
    },
  })
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

it('a refresh that keeps failing is retried within what is left of the certificate served, not on a back-off that outgrows it', async () => {
  if (sc) await stop(sc)
  // [now - 60 s, now + 20 s]: due at once; every refresh (and register) then fails.
  zts.issueFor(20_000)
  sc = await startReady({
    env: {
      ...providerEnv(zts),
      ATHENZ_DOMAIN: 'my.team',
      SERVICEACCOUNT: 'api',
      POD_UID: 'pod-2',
      TOKEN_SERVER_ADDR: '',
      GATEWAY_ADDR: '',
      REFRESH_INTERVAL: '1h',
      DELAY_JITTER_SECONDS: '0',
    },
  })
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
