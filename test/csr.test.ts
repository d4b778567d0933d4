import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createPublicKey, generateKeyPairSync, sign, X509Certificate } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import forge from 'node-forge'
import { buildCaCert, buildCsr, readCsr, signCsr } from '../shared/identity/csr.js'
import { generateRsaKey } from '../shared/identity/local-authority.js'

/**
 * forge builds the CSRs and certificates, OpenSSL signs and verifies them: what comes out must be
 * what forge's own RSA made (a PKCS#1 v1.5 SHA-256 signature over the DER it encodes), and a CSR
 * whose signature does not match its contents is refused.
 */
const spec = (keyPem: string) => ({
  keyPem,
  commonName: 'demo.app',
  dnsNames: ['app.demo.svc'],
  uris: ['spiffe://demo/sa/app'],
  ips: ['10.0.0.7'],
})

const toPem = (der: Buffer) =>
  `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`
const derOf = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64')
const seq = (tag: number, body: Buffer) =>
  Buffer.concat([Buffer.from([tag, 0x82, body.length >> 8, body.length & 255]), body])
/** The signed part of a CSR (DER: SEQUENCE { info, algorithm, signature }), as its bytes. */
const infoOf = (der: Buffer) => der.subarray(4, 8 + der.readUInt16BE(6))
/** AlgorithmIdentifier DER of the signature algorithms used below. */
const ALG = {
  sha1: Buffer.from('300d06092a864886f70d0101050500', 'hex'),
  sha256: Buffer.from('300d06092a864886f70d01010b0500', 'hex'),
  sha512: Buffer.from('300d06092a864886f70d01010d0500', 'hex'),
  ecdsaSha256: Buffer.from('300a06082a8648ce3d040302', 'hex'),
  md5: Buffer.from('300d06092a864886f70d0101040500', 'hex'),
}
/** A CSR of `info` signed by `keyPem` (the way a client other than ours may have made it). */
const signedCsr = (info: Buffer, alg: Buffer, digest: string, keyPem: string) =>
  toPem(
    seq(
      0x30,
      Buffer.concat([info, alg, seq(0x03, Buffer.concat([Buffer.from([0]), sign(digest, info, keyPem)]))]),
    ),
  )

test('a CSR carries its key and names, and its signature is the one forge would make', async () => {
  const { privateKeyPem, publicKeyPem } = await generateRsaKey()
  const pem = buildCsr(spec(privateKeyPem))
  const got = readCsr(pem)
  assert.equal(got.commonName, 'demo.app')
  assert.deepEqual(got.subjectList, ['CN=demo.app', 'OU=Athenz', 'C=US'])
  assert.deepEqual(
    [got.dnsNames, got.uris, got.ips],
    [['app.demo.svc'], ['spiffe://demo/sa/app'], ['10.0.0.7']],
  )
  assert.equal(createPublicKey(got.publicKeyPem).export({ type: 'spki', format: 'pem' }), publicKeyPem)
  const csr = forge.pki.certificationRequestFromPem(pem)
  assert.equal(forge.pki.oids[csr.signatureOid!], 'sha256WithRSAEncryption')
  assert.ok(csr.verify(), "forge's own verify accepts OpenSSL's signature")
  // RSASSA-PKCS1-v1_5 is deterministic: forge signing the same bytes gives the same signature.
  const md = forge.md.sha256.create().update(infoOf(derOf(pem)).toString('binary'))
  assert.equal(csr.signature, forge.pki.privateKeyFromPem(privateKeyPem).sign(md))
})

test('a CSR whose contents were changed after signing, or signed by another key, is refused', async () => {
  const { privateKeyPem } = await generateRsaKey()
  const der = derOf(buildCsr(spec(privateKeyPem)))
  const at = der.indexOf('demo.app')
  assert.ok(at > 0)
  der[at + 7] = 'q'.charCodeAt(0) // demo.apq
  assert.throws(() => readCsr(toPem(der)), { code: 'ERR_CSR', message: /does not verify/ })

  const other = await generateRsaKey()
  const forged = signedCsr(
    infoOf(derOf(buildCsr(spec(privateKeyPem)))),
    ALG.sha256,
    'sha256',
    other.privateKeyPem,
  )
  assert.throws(() => readCsr(forged), { code: 'ERR_CSR', message: /does not verify/ })
  const ca = buildCaCert({
    keyPem: other.privateKeyPem,
    commonName: 'ca',
    organization: 'o',
    notBefore: 0,
    notAfter: Date.now() + 3600_000,
  })
  assert.throws(
    () => signCsr({ caKeyPem: other.privateKeyPem, caCertPem: ca, csrPem: forged, validityMs: 3600_000 }),
    { code: 'ERR_CSR' },
  )
})

test('a CSR signed with SHA-1 or SHA-512 is read; one whose signature algorithm is not for its key is refused', async () => {
  const { privateKeyPem } = await generateRsaKey()
  const info = infoOf(derOf(buildCsr(spec(privateKeyPem))))
  for (const digest of ['sha1', 'sha512'] as const)
    assert.equal(readCsr(signedCsr(info, ALG[digest], digest, privateKeyPem)).commonName, 'demo.app', digest)
  assert.throws(() => readCsr(signedCsr(info, ALG.ecdsaSha256, 'sha256', privateKeyPem)), {
    code: 'ERR_CSR',
    message: /signature algorithm 1\.2\.840\.10045\.4\.3\.2 is not for its rsa key/,
  })
  assert.throws(() => readCsr(signedCsr(info, ALG.md5, 'md5', privateKeyPem)), {
    code: 'ERR_CSR',
    message: /unsupported CSR signature algorithm 1\.2\.840\.113549\.1\.1\.4/,
  })
})

/** A CA good for an hour from a minute ago. */
async function testCa() {
  const caKey = await generateRsaKey()
  const caPem = buildCaCert({
    keyPem: caKey.privateKeyPem,
    commonName: 'test authority',
    organization: 'test',
    notBefore: Date.now() - 60_000,
    notAfter: Date.now() + 3600_000,
  })
  return { caKey, caPem }
}

test("the authority's CA is self-signed and the certificates it issues verify against it", async () => {
  const { caKey, caPem } = await testCa()
  const ca = new X509Certificate(caPem)
  assert.ok(ca.ca && ca.verify(ca.publicKey), 'self-signed CA')
  assert.equal(ca.publicKey.export({ type: 'spki', format: 'pem' }), caKey.publicKeyPem)

  const { privateKeyPem, publicKeyPem } = await generateRsaKey()
  const certPem = signCsr({
    caKeyPem: caKey.privateKeyPem,
    caCertPem: caPem,
    csrPem: buildCsr(spec(privateKeyPem)),
    validityMs: 3600_000,
  })
  const cert = new X509Certificate(certPem)
  assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey), 'issued by the CA')
  assert.equal(cert.publicKey.export({ type: 'spki', format: 'pem' }), publicKeyPem)
  assert.equal(cert.subject, 'CN=demo.app\nOU=Athenz\nC=US')
  assert.equal(cert.subjectAltName, 'DNS:app.demo.svc, URI:spiffe://demo/sa/app, IP Address:10.0.0.7')
  assert.equal(forge.pki.oids[forge.pki.certificateFromPem(certPem).signatureOid], 'sha256WithRSAEncryption')
})

test('PEM: LF lines of 64 out; CRLF, the NEW label and surrounding text in; no request block is ERR_CSR', async () => {
  const { privateKeyPem } = await generateRsaKey()
  const pem = buildCsr(spec(privateKeyPem))
  const lines = pem.trimEnd().split('\n')
  assert.equal(lines[0], '-----BEGIN CERTIFICATE REQUEST-----')
  assert.equal(lines.at(-1), '-----END CERTIFICATE REQUEST-----')
  assert.ok(lines.slice(1, -2).every((l) => l.length === 64) && lines.at(-2)!.length <= 64, pem)
  assert.ok(!pem.includes('\r'))
  // As forge (and so an earlier version) wrote it: CRLF line ends, and the older label.
  const crlf = pem.replace(/\n/g, '\r\n')
  assert.equal(readCsr(`junk before\r\n${crlf}junk after`).commonName, 'demo.app')
  assert.equal(
    readCsr(crlf.replace(/CERTIFICATE REQUEST/g, 'NEW CERTIFICATE REQUEST')).commonName,
    'demo.app',
  )
  assert.throws(() => readCsr(pem.replace(/CERTIFICATE REQUEST/g, 'CERTIFICATE')), {
    code: 'ERR_CSR',
    message: /no CERTIFICATE REQUEST block/,
  })
  assert.throws(() => readCsr(pem.replace('-----END CERTIFICATE REQUEST-----', '')), { code: 'ERR_CSR' })
})

test('EC keys on P-256, P-384 and P-521 (a third party may write one) make requests OpenSSL verifies, signed as Go signs them; the authority issues for them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-csr-ec-'))
  const caKey = await generateRsaKey()
  const now = Date.now()
  const caCertPem = buildCaCert({
    keyPem: caKey.privateKeyPem,
    commonName: 'ca',
    organization: 'o',
    notBefore: now - 60_000,
    notAfter: now + 3600_000,
  })
  for (const [curve, alg] of [
    ['P-256', 'ecdsa-with-SHA256'],
    ['P-384', 'ecdsa-with-SHA384'],
    ['P-521', 'ecdsa-with-SHA512'],
  ] as const) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve })
    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    const pem = buildCsr(spec(keyPem))
    const got = readCsr(pem)
    assert.deepEqual([got.commonName, got.dnsNames, got.ips], ['demo.app', ['app.demo.svc'], ['10.0.0.7']])
    assert.equal(got.publicKeyPem, publicKey.export({ type: 'spki', format: 'pem' }))
    // OpenSSL's own reading of the request: the signature verifies, the algorithm is the curve's.
    const file = join(dir, `${curve}.csr`)
    writeFileSync(file, pem)
    const out = execFileSync('openssl', ['req', '-in', file, '-noout', '-verify', '-text'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    assert.match(out, new RegExp(`Signature Algorithm: ${alg}`), curve)
    assert.match(out, /DNS:app\.demo\.svc, URI:spiffe:\/\/demo\/sa\/app, IP Address:10\.0\.0\.7/, curve)
    const cert = new X509Certificate(
      signCsr({ caKeyPem: caKey.privateKeyPem, caCertPem, csrPem: pem, validityMs: 3600_000 }),
    )
    assert.ok(cert.checkPrivateKey(privateKey), `${curve}: the certificate is for the request's key`)
    assert.ok(cert.verify(new X509Certificate(caCertPem).publicKey), curve)
    assert.equal(cert.subjectAltName, 'DNS:app.demo.svc, URI:spiffe://demo/sa/app, IP Address:10.0.0.7')
  }
})

test('a key neither RSA nor EC on a NIST curve is refused by name, not with an unknown OID', () => {
  for (const [key, what] of [
    [generateKeyPairSync('ed25519').privateKey, /this key is ed25519/],
    [generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey, /this key is an EC key on secp256k1/],
  ] as const) {
    assert.throws(
      () =>
        buildCsr({
          keyPem: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
          commonName: 'my.team.api',
          dnsNames: [],
          uris: [],
          ips: [],
        }),
      (err: Error & { code?: string }) => err.code === 'ERR_KEY_TYPE' && what.test(err.message),
    )
  }
})
