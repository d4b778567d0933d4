import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { type Sidecar, startReady, stop } from '../test/support/sidecar.js'

const dir = mkdtempSync(join(tmpdir(), 'sia-cert-'))
const roles = join(dir, 'roles')
let sc: Sidecar

const mode = (f: string) => statSync(f).mode & 0o777
const cert = (f: string) => new X509Certificate(readFileSync(f))

before(async () => {
  sc = await startReady({
    dataDir: dir,
    env: {
      ATHENZ_DOMAIN: 'my.team',
      SERVICEACCOUNT: 'api',
      DNS_SUFFIX: 'example.test',
      POD_IP: '10.1.2.3',
      POD_UID: 'pod-1234',
      TARGET_DOMAIN_ROLES: 'demo:role.reader,other.dom:role.writer',
      ROLECERT_DIR: roles,
      ROLE_CERT_KEY_FILE_OUTPUT: 'true',
      REFRESH_INTERVAL: '2s',
    },
  })
})

after(async () => {
  if (sc) assert.equal(await stop(sc), 0)
})

describe('certificate service, local provider', () => {
  it('writes key 0600 and certs 0644', () => {
    assert.equal(mode(join(dir, 'key.pem')), 0o600)
    assert.equal(mode(join(dir, 'cert.pem')), 0o644)
    assert.equal(mode(join(dir, 'ca.pem')), 0o644)
    assert.equal(mode(join(roles, 'demo:role.reader.cert.pem')), 0o644)
    assert.equal(mode(join(roles, 'other.dom:role.writer.cert.pem')), 0o644)
    assert.equal(mode(join(roles, 'demo:role.reader.key.pem')), 0o600)
  })

  it('issues the service certificate with the names of the Go original', () => {
    const c = cert(join(dir, 'cert.pem'))
    assert.equal(c.subject, 'CN=my.team.api\nOU=Athenz\nC=US')
    const san = c.subjectAltName!.split(', ')
    assert.deepEqual(san, [
      'DNS:api.my-team.example.test',
      'DNS:*.api.my-team.example.test',
      'DNS:pod-1234.instanceid.athenz.example.test',
      'URI:spiffe://my.team/sa/api',
      'URI:athenz://instanceid/local/pod-1234',
      'IP Address:10.1.2.3',
    ])
    const ca = cert(join(dir, 'ca.pem'))
    assert.ok(c.verify(ca.publicKey))
    // The key on disk is the key of the certificate (read again if a refresh ran in between).
    for (;;) {
      const before = readFileSync(join(dir, 'cert.pem'), 'utf8')
      const key = createPrivateKey(readFileSync(join(dir, 'key.pem')))
      if (before !== readFileSync(join(dir, 'cert.pem'), 'utf8')) continue
      assert.ok(new X509Certificate(before).checkPrivateKey(key))
      break
    }
  })

  it('issues role certificates with CN <domain>:role.<role> and the spiffe role URI', () => {
    const c = cert(join(roles, 'other.dom:role.writer.cert.pem'))
    assert.equal(c.subject, 'CN=other.dom:role.writer\nOU=Athenz\nC=US')
    assert.match(c.subjectAltName!, /URI:spiffe:\/\/other\.dom\/ra\/writer/)
    assert.match(c.subjectAltName!, /email:my\.team\.api@example\.test/)
    assert.ok(c.verify(cert(join(dir, 'ca.pem')).publicKey))
  })

  it('refreshes the certificates every REFRESH_INTERVAL', async () => {
    const first = cert(join(dir, 'cert.pem')).serialNumber
    const firstRole = cert(join(roles, 'demo:role.reader.cert.pem')).serialNumber
    const n = sc.events('certificate.issued').length
    await sc.waitFor(() => sc.events('certificate.issued').length >= n + 3) // instance + two roles
    assert.notEqual(cert(join(dir, 'cert.pem')).serialNumber, first)
    await sc.waitFor(() => cert(join(roles, 'demo:role.reader.cert.pem')).serialNumber !== firstRole)
  })

  it('exports x509 metrics for the service, CA and role certificate files', async () => {
    const text = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
    for (const file of [
      join(dir, 'cert.pem'),
      join(dir, 'ca.pem'),
      join(roles, 'demo:role.reader.cert.pem'),
    ]) {
      const re = new RegExp(`^x509_cert_expires_in_seconds\\{[^}]*filepath="${file}"[^}]*\\} (\\d+)$`, 'm')
      assert.ok(Number(re.exec(text)?.[1]) > 0, `no expiry for ${file}`)
    }
    assert.match(text, /^x509_cert_not_after\{[^}]*subject_CN="my\.team\.api"[^}]*\} \d+/m)
    assert.match(
      text,
      /^x509_cert_expired\{[^}]*subject_CN="demo:role\.reader"[^}]*issuer_CN="sia-supervisor local authority"[^}]*\} 0$/m,
    )
    assert.match(text, /^x509_read_errors\{[^}]*\} 0$/m)
  })
})
