import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, it } from 'node:test'
import { providerEnv, startZtsDouble, type ZtsDouble } from './doubles/zts.js'
import { type Sidecar, startSidecar, stop } from './support/sidecar.js'

let zts: ZtsDouble
let sc: Sidecar | undefined

before(async () => {
  zts = await startZtsDouble()
})
after(async () => {
  if (sc) await stop(sc)
  await zts?.close()
})

it('a fresh pod whose role certificate ZTS refuses starts on the instance identity it was issued, and gets the role certificate in the background', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-boot-roles-'))
  zts.failNext('rolecert', 403, 1_000) // not a member (yet)
  sc = startSidecar({
    dataDir: dir,
    env: {
      ...providerEnv(zts),
      ATHENZ_DOMAIN: 'my.team',
      SERVICEACCOUNT: 'api',
      POD_UID: 'pod-1',
      TOKEN_SERVER_ADDR: '',
      GATEWAY_ADDR: '',
      DELAY_JITTER_SECONDS: '0',
      TARGET_DOMAIN_ROLES: 'demo:role.reader',
      START_TIMEOUT: '6s',
    },
  })
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
