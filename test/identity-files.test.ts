import assert from 'node:assert/strict'
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { type ConnectionOptions, connect } from 'node:tls'
import { startZtsDouble, type ZtsDouble } from './doubles/zts.js'
import { httpsRequest } from './doubles/zts-https.js'
import { type Sidecar, startReady, startSidecar, stop } from './support/sidecar.js'

let zts: ZtsDouble
let sc: Sidecar
const dir = mkdtempSync(join(tmpdir(), 'sia-files-'))
const ext = join(dir, 'external') // written by "someone else"
const keyFile = join(ext, 'key.pem')
const certFile = join(ext, 'cert.pem')

/** Replaces both files the way kubelet or cert-manager does: rename over the old ones. */
function install(pair: { keyPem: string; certPem: string }) {
  writeFileSync(`${keyFile}.new`, pair.keyPem, { mode: 0o600 })
  writeFileSync(`${certFile}.new`, pair.certPem)
  renameSync(`${keyFile}.new`, keyFile)
  renameSync(`${certFile}.new`, certFile)
}

/**
 * A key and certificate from `zts` for `cn`, written in `dir` as a third party does (another
 * ZTS double of the test's own), and the settings that name them.
 */
async function thirdParty(zts: ZtsDouble, dir: string, cn: string, keyType: 'rsa' | 'ec' = 'rsa') {
  const pair = await zts.issue(cn, keyType)
  writeFileSync(join(dir, 'key.pem'), pair.keyPem, { mode: 0o600 })
  writeFileSync(join(dir, 'cert.pem'), pair.certPem)
  const env = {
    ENDPOINT: zts.url,
    SERVER_CA_CERT: zts.caFile,
    ATHENZ_DOMAIN: 'my.team',
    SERVICEACCOUNT: 'api',
    KEY_FILE: join(dir, 'key.pem'),
    CERT_FILE: join(dir, 'cert.pem'),
  }
  return { pair, env }
}

/** Serial of the certificate the token server presents right now. */
function presented(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca: zts.caPem }, () => {
      resolve(s.getPeerCertificate().serialNumber)
      s.end()
    })
    s.on('error', reject)
  })
}

before(async () => {
  zts = await startZtsDouble()
  mkdirSync(ext)
  install(await zts.issue('my.team.api'))
  sc = await startReady({
    dataDir: dir,
    env: {
      ENDPOINT: zts.url,
      SERVER_CA_CERT: zts.caFile,
      ATHENZ_DOMAIN: 'my.team',
      SERVICEACCOUNT: 'api',
      KEY_FILE: keyFile,
      CERT_FILE: certFile,
      TARGET_DOMAIN_ROLES: 'demo:role.reader',
      TOKEN_SERVER_TLS_CERT_PATH: certFile,
      TOKEN_SERVER_TLS_KEY_PATH: keyFile,
    },
  })
})

after(async () => {
  if (sc) assert.equal(await stop(sc), 0)
  await zts?.close()
})

// The suite's sidecar and the two of their own, side by side.
describe('files', { concurrency: 3 }, () => {
  describe('files provider', { concurrency: 1 }, () => {
    it('uses the key and cert someone else wrote, without registering', () => {
      assert.equal(zts.counts.register, 0)
      const rc = zts.received.find((r) => r.route === 'rolecert')!
      assert.equal(rc.clientSerial, new X509Certificate(readFileSync(certFile)).serialNumber)
    })

    it('reloads a replaced key and cert without a restart', async () => {
      const port = (await sc.waitForEvent('server.listening', { service: 'token' })).port as number
      const old = new X509Certificate(readFileSync(certFile)).serialNumber
      assert.equal(await presented(port), old)
      const next = await zts.issue('my.team.api')
      install(next)
      const serialNext = new X509Certificate(next.certPem).serialNumber
      await sc.waitForEvent('certificate.reloaded')
      // The role certificate is re-issued for the new key...
      await sc.waitFor(() => {
        const role = new X509Certificate(readFileSync(join(dir, 'demo:role.reader.cert.pem')))
        return (
          role.publicKey.export({ format: 'jwk' }).n ===
          createPublicKey(next.keyPem).export({ format: 'jwk' }).n
        )
      })
      // ...the token server presents the new certificate...
      await sc.waitForEvent('token.tls.reloaded')
      assert.equal(await presented(port), serialNext)
      // ...and the token service authenticates to ZTS with it.
      await sc.waitForEvent('token.identity.updated')
      const res = await httpsRequest(
        `https://127.0.0.1:${port}/accesstoken`,
        { ca: zts.caPem },
        { method: 'POST', body: JSON.stringify({ domain: 'demo', role: 'fresh' }) },
      )
      assert.equal(res.status, 200)
      assert.equal(zts.received.filter((r) => r.route === 'oauth2').at(-1)!.clientSerial, serialNext)
    })

    it('the TLS token server answers a client that half-closes after its request', async () => {
      const port = (await sc.waitForEvent('server.listening', { service: 'token' })).port as number
      const text = await new Promise<string>((resolve, reject) => {
        // allowHalfOpen: read by tls.connect (its socket's), not in @types/node's ConnectionOptions.
        const options = { host: '127.0.0.1', port, ca: zts.caPem, allowHalfOpen: true } as ConnectionOptions
        const s = connect(options, () => {
          s.write('GET / HTTP/1.1\r\nhost: x\r\nx-athenz-domain: demo\r\nx-athenz-role: half-closed\r\n\r\n')
          s.end() // done sending; still reading
        })
        let got = ''
        s.on('data', (d: Buffer) => {
          got += d.toString('latin1')
        })
        s.on('close', () => resolve(got))
        s.on('error', reject)
      })
      assert.match(text, /^HTTP\/1\.1 200 /)
    })

    it('a role certificate that fails for a new key is retried on the back-off schedule, not a REFRESH_INTERVAL later', async () => {
      // Every try of the client fails once: the reload's own attempt.
      zts.failNext('rolecert', 503, 3)
      const failures = sc.events('certificate.refresh.failed').length
      const next = await zts.issue('my.team.api')
      install(next)
      await sc.waitForCount('certificate.refresh.failed', failures + 1)
      const role = () => new X509Certificate(readFileSync(join(dir, 'demo:role.reader.cert.pem')))
      const forNewKey = () =>
        role().publicKey.export({ format: 'jwk' }).n ===
        createPublicKey(next.keyPem).export({ format: 'jwk' }).n
      assert.equal(forNewKey(), false, 'still the old key’s')
      // 3.75 to 5 s later (REFRESH_INTERVAL is a day here).
      await sc.waitForEvent('certificate.refresh.recovered', {}, 20_000)
      assert.ok(forNewKey(), 'the role certificate is the new key’s')
    })

    it('files that stay no valid pair, or name another principal, are said and not adopted', async () => {
      const reloads = sc.events('certificate.reloaded').length
      const a = await zts.issue('my.team.api')
      const b = await zts.issue('my.team.api')
      install({ keyPem: a.keyPem, certPem: b.certPem }) // a key and someone else's certificate
      const invalid = await sc.waitForEvent('certificate.files.invalid', {}, 10_000)
      assert.match(String(invalid.reason), /not for our key/)
      install(await zts.issue('evil.other'))
      const refused = await sc.waitForEvent('certificate.files.refused', {}, 10_000)
      assert.match(String(refused.reason), /names evil\.other, not my\.team\.api/)
      assert.equal(sc.events('certificate.reloaded').length, reloads, 'neither was adopted')
      install(await zts.issue('my.team.api'))
      await sc.waitForCount('certificate.reloaded', reloads + 1)
    })
  })

  it('role certificates are renewed on their own schedule, not every 5 s once the third party’s certificate is past REFRESH_INTERVAL', async (t) => {
    // A ZTS of its own: the suite's counts what its sidecar asks, and sets faults on it.
    const zts = await startZtsDouble()
    t.after(() => zts.close())
    const dir2 = mkdtempSync(join(tmpdir(), 'sia-files-spin-'))
    const ext2 = join(dir2, 'external')
    mkdirSync(ext2)
    // Issued from a minute ago: past a 7 s interval at once.
    const { env } = await thirdParty(zts, ext2, 'my.team.api')
    const sc2 = await startReady({
      dataDir: dir2,
      env: {
        ...env,
        TARGET_DOMAIN_ROLES: 'demo:role.writer',
        REFRESH_INTERVAL: '7s',
        TOKEN_SERVER_ADDR: '',
      },
    })
    try {
      const asked = () =>
        zts.received.filter((r) => r.route === 'rolecert' && r.clientCN === 'my.team.api').length
      const atReady = asked()
      await new Promise((r) => setTimeout(r, 5_800))
      assert.equal(asked(), atReady, 'no role certificate asked for within 5.8 s of a 7 s interval')
    } finally {
      assert.equal(await stop(sc2), 0)
    }
  })

  it('an EC key from the third party gets its role certificates, as with SIA (they were refused: RSA only)', async (t) => {
    const zts = await startZtsDouble()
    t.after(() => zts.close())
    const dir4 = mkdtempSync(join(tmpdir(), 'sia-files-ec-'))
    const { pair, env } = await thirdParty(zts, dir4, 'my.team.api', 'ec')
    const sc4 = await startReady({
      dataDir: dir4,
      env: {
        ...env,
        TARGET_DOMAIN_ROLES: 'demo:role.reader',
      },
    })
    try {
      const issued = await sc4.waitForEvent('certificate.issued', { kind: 'role' })
      assert.equal(sc4.events('certificate.role.failed').length, 0)
      const roleCert = new X509Certificate(readFileSync(issued.file as string, 'utf8'))
      assert.ok(
        roleCert.checkPrivateKey(createPrivateKey(pair.keyPem)),
        'the role certificate is for the EC key',
      )
      assert.match(roleCert.subject, /CN=demo:role\.reader/)
      const asked = zts.received.filter((r) => r.route === 'rolecert' && r.clientCN === 'my.team.api')
      assert.equal(asked.length, 1, 'asked once, over mutual TLS with the EC key')
      // The token server fetched over mutual TLS with the EC key too.
      const res = await fetch(`${await sc4.url('token')}/roletoken`, {
        method: 'POST',
        body: JSON.stringify({ domain: 'demo', role: 'reader' }),
      })
      assert.equal(res.status, 200)
      assert.ok(zts.received.some((r) => r.route !== 'rolecert' && r.clientCN === 'my.team.api'))
    } finally {
      assert.equal(await stop(sc4), 0)
    }
  })

  it('a third party’s certificate for another principal is used, and said at boot (sidecar and MODE=init)', async (t) => {
    // A ZTS of its own: the suite's counts what its sidecar asks, and sets faults on it.
    const zts = await startZtsDouble()
    t.after(() => zts.close())
    const dir3 = mkdtempSync(join(tmpdir(), 'sia-files-other-'))
    const { env: named } = await thirdParty(zts, dir3, 'other.team.web')
    const env = {
      ...named,
      TOKEN_SERVER_ADDR: '',
      GATEWAY_ADDR: '',
    }
    const said = (s: Sidecar) => {
      const w = s.events('certificate.files.principal')
      assert.equal(w.length, 1)
      assert.equal(w[0]!.level, 'warn')
      assert.deepEqual([w[0]!.names, w[0]!.principal], ['other.team.web', 'my.team.api'])
      assert.match(
        String(w[0]!.msg),
        /names other\.team\.web, not my\.team\.api .*role certificates are asked for my\.team\.api/,
      )
    }
    const sc3 = await startReady({ dataDir: dir3, env })
    said(sc3)
    assert.equal(await stop(sc3), 0)
    const init = startSidecar({ dataDir: dir3, env: { ...env, MODE: 'init' } })
    assert.equal((await init.exited).code, 0, init.stderr())
    said(init)
    // The configured principal's own certificate: nothing said (the suite's sidecar).
    assert.deepEqual(sc.events('certificate.files.principal'), [])
  })
})
