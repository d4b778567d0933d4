import { createPublicKey, type KeyObject, sign, verify, X509Certificate } from 'node:crypto'
import forge from 'node-forge'
import { codedError } from '../errors.js'
import { csrDer, fromDer, toDer, toPem } from './der.js'
import { randomSerial } from './serial.js'
import { DEFAULT_SUBJECT, FORGE_NAMES, type SubjectAttribute } from './subject.js'

/**
 * CSRs as k8s-athenz-sia builds them, and a CA that signs them: synchronous functions over PEM
 * strings, so they run on the piscina pool (and in the ZTS test double) unchanged. node-forge
 * encodes the requests and certificates; the RSA signatures and their checks are OpenSSL's.
 */
export interface CsrSpec {
  keyPem: string
  commonName: string
  /** The subject besides the CN, after it (default: SIA's OU=Athenz, C=US). */
  subject?: SubjectAttribute[]
  dnsNames: string[]
  uris: string[]
  ips: string[]
  emails?: string[]
}

/** ASN.1 PrintableString's alphabet; anything else is encoded as UTF8String, as Go does. */
const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/

export function buildCsr(spec: CsrSpec): string {
  const csr = forge.pki.createCertificationRequest()
  csr.publicKey = publicKeyOf(spec.keyPem)
  csr.setSubject([
    { name: 'commonName', value: spec.commonName },
    ...(spec.subject ?? DEFAULT_SUBJECT).map(
      (a) =>
        ({
          name: FORGE_NAMES[a.type],
          value: a.value,
          ...(PRINTABLE.test(a.value) ? {} : { valueTagClass: forge.asn1.Type.UTF8 }),
        }) as forge.pki.CertificateField,
    ),
  ])
  const altNames = [
    ...spec.dnsNames.map((value) => ({ type: 2, value })),
    ...(spec.emails ?? []).map((value) => ({ type: 1, value })),
    ...spec.uris.map((value) => ({ type: 6, value })),
    ...spec.ips.map((ip) => ({ type: 7, ip })),
  ]
  csr.setAttributes([{ name: 'extensionRequest', extensions: [{ name: 'subjectAltName', altNames }] }])
  csr.signatureOid = csr.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption!
  csr.certificationRequestInfo = pki.getCertificationRequestInfo(csr)
  csr.signature = rsaSha256(csr.certificationRequestInfo, spec.keyPem)
  return toPem('CERTIFICATE REQUEST', toDer(forge.pki.certificationRequestToAsn1(csr)))
}

/** A self-signed CA certificate for `keyPem` (the local authority's, made once). */
export interface CaSpec {
  keyPem: string
  commonName: string
  organization: string
  /** Epoch ms. */
  notBefore: number
  notAfter: number
}

export function buildCaCert(spec: CaSpec): string {
  const cert = forge.pki.createCertificate()
  cert.publicKey = publicKeyOf(spec.keyPem)
  cert.serialNumber = randomSerial()
  cert.validity.notBefore = new Date(spec.notBefore)
  cert.validity.notAfter = new Date(spec.notAfter)
  const subject = [
    { name: 'commonName', value: spec.commonName },
    { name: 'organizationName', value: spec.organization },
  ]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ])
  signCert(cert, spec.keyPem)
  return toPem('CERTIFICATE', toDer(forge.pki.certificateToAsn1(cert)))
}

/** What a CSR asks for, as a CA (or a test) reads it. */
export interface CsrContents {
  commonName: string
  subject: Record<string, string>
  /** Every subject attribute in order, as `<short name>=<value>` (repeated types kept). */
  subjectList: string[]
  dnsNames: string[]
  uris: string[]
  ips: string[]
  emails: string[]
  publicKeyPem: string
}

export function readCsr(csrPem: string): CsrContents {
  const csr = forge.pki.certificationRequestFromAsn1(fromDer(csrDer(csrPem)))
  const key = verifiedKey(csr)
  const subject: Record<string, string> = {}
  const subjectList: string[] = []
  for (const a of csr.subject.attributes) {
    const name = String(a.shortName ?? a.name ?? a.type)
    const value =
      (a.valueTagClass as number) === forge.asn1.Type.UTF8
        ? forge.util.decodeUtf8(String(a.value))
        : String(a.value)
    subject[name] = value
    subjectList.push(`${name}=${value}`)
  }
  const ext = (csr.getAttribute({ name: 'extensionRequest' }) as { extensions?: Extension[] } | null)
    ?.extensions
  const san =
    (ext?.find((e) => e.name === 'subjectAltName') as { altNames?: AltName[] } | undefined)?.altNames ?? []
  const pick = (type: number) =>
    san.filter((n) => n.type === type).map((n) => (type === 7 ? n.ip! : n.value!))
  return {
    commonName: subject.CN ?? '',
    subject,
    subjectList,
    dnsNames: pick(2),
    uris: pick(6),
    ips: pick(7),
    emails: pick(1),
    publicKeyPem: key.export({ type: 'spki', format: 'pem' }).toString(),
  }
}

interface AltName {
  type: number
  value?: string
  ip?: string
}

export interface SignRequest {
  caKeyPem: string
  caCertPem: string
  csrPem: string
  validityMs: number
}

/** Issues a certificate for the CSR's key, subject and SANs (the authority's whole policy). */
export function signCsr(req: SignRequest): string {
  const csr = forge.pki.certificationRequestFromAsn1(fromDer(csrDer(req.csrPem)))
  verifiedKey(csr)
  const ca = forge.pki.certificateFromAsn1(fromDer(new X509Certificate(req.caCertPem).raw))
  const cert = forge.pki.createCertificate()
  cert.publicKey = csr.publicKey as forge.pki.PublicKey
  cert.serialNumber = randomSerial()
  cert.validity.notBefore = new Date(Date.now() - 60_000)
  cert.validity.notAfter = new Date(Date.now() + req.validityMs)
  // forge parses a UTF8String value as its raw bytes and encodes it again on output: decode it first.
  cert.setSubject(
    csr.subject.attributes.map((a) =>
      (a.valueTagClass as number) === forge.asn1.Type.UTF8
        ? { ...a, value: forge.util.decodeUtf8(String(a.value)) }
        : a,
    ),
  )
  cert.setIssuer(ca.subject.attributes)
  const ext = (csr.getAttribute({ name: 'extensionRequest' }) as { extensions?: Extension[] } | null)
    ?.extensions
  const san = ext?.find((e) => e.name === 'subjectAltName')
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    ...(san ? [san] : []),
  ])
  signCert(cert, req.caKeyPem)
  return toPem('CERTIFICATE', toDer(forge.pki.certificateToAsn1(cert)))
}

/** The DER builders forge's own sign() uses (public, untyped in @types/node-forge). */
const pki = forge.pki as typeof forge.pki & {
  getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1
  getCertificationRequestInfo(csr: forge.pki.CertificateSigningRequest): forge.asn1.Asn1
}

/**
 * forge builds what is signed, OpenSSL signs it (RSASSA-PKCS1-v1_5 over SHA-256, as forge's
 * sign() with sha256 does). forge's RSA is big-integer arithmetic in JavaScript: tens of ms of CPU
 * a signature, and on the pool's threads it wakes the optimizing compiler, whose pages stay
 * resident after those threads end.
 */
function rsaSha256(toBeSigned: forge.asn1.Asn1, keyPem: string): string {
  return sign('sha256', toDer(toBeSigned), keyPem).toString('binary')
}

/** The digests of the RSASSA-PKCS1-v1_5 signatures a CSR is accepted with, by forge's OID name. */
const CSR_DIGESTS: Record<string, string> = {
  sha1WithRSAEncryption: 'sha1',
  sha256WithRSAEncryption: 'sha256',
  sha384WithRSAEncryption: 'sha384',
  sha512WithRSAEncryption: 'sha512',
}

/**
 * The CSR's public key, once its self-signature is checked by OpenSSL (forge's verify() is its
 * JavaScript RSA again).
 */
function verifiedKey(csr: forge.pki.CertificateSigningRequest): KeyObject {
  const digest = CSR_DIGESTS[forge.pki.oids[csr.signatureOid ?? ''] ?? '']
  if (!digest) throw codedError('ERR_CSR', `unsupported CSR signature algorithm ${csr.signatureOid}`)
  const spki = toDer(forge.pki.publicKeyToAsn1(csr.publicKey as forge.pki.PublicKey))
  const key = createPublicKey({ key: spki, format: 'der', type: 'spki' })
  if (
    !verify(digest, toDer(csr.certificationRequestInfo!), key, Buffer.from(csr.signature as string, 'binary'))
  )
    throw codedError('ERR_CSR', 'CSR signature does not verify')
  return key
}

function publicKeyOf(keyPem: string): forge.pki.PublicKey {
  const key = createPublicKey(keyPem)
  // forge encodes RSA keys only: an EC key (a third party's, files) failed every role certificate
  // with "Cannot read public key. Unknown OID", retried for ever.
  if (key.asymmetricKeyType !== 'rsa') {
    throw codedError(
      'ERR_KEY_TYPE',
      `certificate requests are made for RSA keys only; this key is ${key.asymmetricKeyType ?? 'unknown'}`,
    )
  }
  return forge.pki.publicKeyFromAsn1(fromDer(key.export({ type: 'spki', format: 'der' })))
}

function signCert(cert: forge.pki.Certificate, keyPem: string): void {
  cert.signatureOid = cert.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption!
  cert.tbsCertificate = pki.getTBSCertificate(cert)
  cert.signature = rsaSha256(cert.tbsCertificate, keyPem)
}

interface Extension {
  name: string
  [field: string]: unknown
}
