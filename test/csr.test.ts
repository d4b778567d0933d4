import assert from 'node:assert/strict'
import { createPublicKey, generateKeyPairSync, sign, X509Certificate } from 'node:crypto'
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

test('a CSR signed with SHA-1 or SHA-512 is read; one whose signature algorithm is not RSA is refused', async () => {
  const { privateKeyPem } = await generateRsaKey()
  const info = infoOf(derOf(buildCsr(spec(privateKeyPem))))
  for (const digest of ['sha1', 'sha512'] as const)
    assert.equal(readCsr(signedCsr(info, ALG[digest], digest, privateKeyPem)).commonName, 'demo.app', digest)
  assert.throws(() => readCsr(signedCsr(info, ALG.ecdsaSha256, 'sha256', privateKeyPem)), {
    code: 'ERR_CSR',
    message: /unsupported CSR signature algorithm 1\.2\.840\.10045\.4\.3\.2/,
  })
})

test("the authority's CA is self-signed and the certificates it issues verify against it", async () => {
  const caKey = await generateRsaKey()
  const now = Date.now()
  const caPem = buildCaCert({
    keyPem: caKey.privateKeyPem,
    commonName: 'test authority',
    organization: 'test',
    notBefore: now - 60_000,
    notAfter: now + 3600_000,
  })
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

test('a CSR for a key that is not RSA (a third party may write an EC key) is refused by name, not with an unknown OID', () => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  assert.throws(
    () =>
      buildCsr({
        keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        commonName: 'my.team.api',
        dnsNames: [],
        uris: [],
        ips: [],
      }),
    (err: Error & { code?: string }) =>
      err.code === 'ERR_KEY_TYPE' && /RSA keys only; this key is ec/.test(err.message),
  )
})
