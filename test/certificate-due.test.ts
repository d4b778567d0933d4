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
