import { createPublicKey, type KeyObject, sign, verify, X509Certificate } from 'node:crypto'
import forge from 'node-forge'
import { codedError } from '../errors.js'
import { csrDer, fromDer, toDer, toPem } from './der.js'
import { randomSerial } from './serial.js'
import { DEFAULT_SUBJECT, FORGE_NAMES, type SubjectAttribute } from './subject.js'

/**
 * CSRs as k8s-athenz-sia builds them, and a CA that signs them: synchronous functions over PEM
 * strings, so they run on the piscina pool (and in the ZTS test double) unchanged. node-forge
 * encodes the requests and certificates; the keys (RSA or EC), the signatures and their checks
 * are OpenSSL's. forge reads and writes RSA public keys only: where a request or certificate
 * holds a key, forge is given a placeholder and the key OpenSSL exports takes its place in the DER.
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
  const signer = signerOf(spec.keyPem)
  const csr = forge.pki.createCertificationRequest()
  csr.publicKey = PLACEHOLDER_KEY
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
  const info = pki.getCertificationRequestInfo(csr)
  const parts = info.value as forge.asn1.Asn1[]
  parts[INFO_KEY] = signer.spki
  return toPem('CERTIFICATE REQUEST', signed(info, signer))
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
  const { csr, key } = verifiedCsr(csrPem)
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
  const { csr, key } = verifiedCsr(req.csrPem)
  const ca = forge.pki.certificateFromAsn1(fromDer(new X509Certificate(req.caCertPem).raw))
  const cert = forge.pki.createCertificate()
  cert.publicKey = PLACEHOLDER_KEY
  cert.serialNumber = randomSerial()
  cert.validity.notBefore = new Date(Date.now() - 60_000)
  // Never past the authority's end: a verifier refuses the chain from then on.
  cert.validity.notAfter = new Date(Math.min(Date.now() + req.validityMs, ca.validity.notAfter.getTime()))
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
  signCert(cert, req.caKeyPem, fromDer(key.export({ type: 'spki', format: 'der' })))
  return toPem('CERTIFICATE', toDer(forge.pki.certificateToAsn1(cert)))
}

/** The DER builders forge's own sign() uses (public, untyped in @types/node-forge). */
const pki = forge.pki as typeof forge.pki & {
  getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1
  getCertificationRequestInfo(csr: forge.pki.CertificateSigningRequest): forge.asn1.Asn1
}

const { asn1 } = forge
/** Where the key is in a CertificationRequestInfo (version, subject, key) and a TBSCertificate. */
const INFO_KEY = 2
const TBS_KEY = 6
/** What forge is given where a key goes (it encodes RSA keys only); the DER gets the real one. */
const PLACEHOLDER_KEY = forge.pki.setRsaPublicKey(
  new forge.jsbn.BigInteger('1'),
  new forge.jsbn.BigInteger('3'),
)

/** The self-signature algorithms of a request: the digest and the key type each is made with. */
const SIGNATURES: Record<string, { digest: string; keyType: 'rsa' | 'ec' }> = {
  '1.2.840.113549.1.1.5': { digest: 'sha1', keyType: 'rsa' },
  '1.2.840.113549.1.1.11': { digest: 'sha256', keyType: 'rsa' },
  '1.2.840.113549.1.1.12': { digest: 'sha384', keyType: 'rsa' },
  '1.2.840.113549.1.1.13': { digest: 'sha512', keyType: 'rsa' },
  '1.2.840.10045.4.3.2': { digest: 'sha256', keyType: 'ec' },
  '1.2.840.10045.4.3.3': { digest: 'sha384', keyType: 'ec' },
  '1.2.840.10045.4.3.4': { digest: 'sha512', keyType: 'ec' },
}

/** As Go's x509 signs with an EC key (SIA's requests): the digest the curve's size calls for. */
const EC_SIGNATURES: Record<string, string> = {
  prime256v1: '1.2.840.10045.4.3.2',
  secp384r1: '1.2.840.10045.4.3.3',
  secp521r1: '1.2.840.10045.4.3.4',
}
const RSA_SHA256 = '1.2.840.113549.1.1.11'

interface Signer {
  keyPem: string
  /** The key's SubjectPublicKeyInfo, as OpenSSL exports it. */
  spki: forge.asn1.Asn1
  oid: string
}

/** RSA (PKCS#1 v1.5, SHA-256, as SIA) or EC (ECDSA on P-256, P-384 or P-521) keys sign requests. */
function signerOf(keyPem: string): Signer {
  const key = createPublicKey(keyPem)
  const oid =
    key.asymmetricKeyType === 'rsa'
      ? RSA_SHA256
      : key.asymmetricKeyType === 'ec'
        ? EC_SIGNATURES[key.asymmetricKeyDetails?.namedCurve ?? '']
        : undefined
  if (!oid) {
    const what =
      key.asymmetricKeyType === 'ec'
        ? `an EC key on ${key.asymmetricKeyDetails?.namedCurve}`
        : key.asymmetricKeyType
    throw codedError(
      'ERR_KEY_TYPE',
      `certificate requests are made for RSA keys and EC keys on P-256, P-384 or P-521; this key is ${what ?? 'unknown'}`,
    )
  }
  return { keyPem, spki: fromDer(key.export({ type: 'spki', format: 'der' })), oid }
}

/** SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING signature }, signed by OpenSSL. */
function signed(tbs: forge.asn1.Asn1, signer: Signer): Buffer {
  const signature = sign(SIGNATURES[signer.oid]!.digest, toDer(tbs), signer.keyPem)
  const oid = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(signer.oid).getBytes())
  // RSA's AlgorithmIdentifier carries a NULL parameter, ECDSA's none (RFC 4055, RFC 5758).
  const params =
    signer.oid === RSA_SHA256 ? [asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')] : []
  return toDer(
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
      tbs,
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [oid, ...params]),
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, `\0${signature.toString('binary')}`),
    ]),
  )
}

/**
 * The request, once its self-signature is checked by OpenSSL with the key it holds and an
 * algorithm made for that key's type; forge reads its names (with the placeholder in the key's place).
 */
function verifiedCsr(csrPem: string): { csr: forge.pki.CertificateSigningRequest; key: KeyObject } {
  const req = fromDer(csrDer(csrPem))
  const [info, algorithm, signature] = Array.isArray(req.value) ? req.value : []
  const infoParts = info && Array.isArray(info.value) ? info.value : []
  const oidNode = algorithm && Array.isArray(algorithm.value) ? algorithm.value[0] : undefined
  if (!infoParts[INFO_KEY] || typeof oidNode?.value !== 'string' || !signature)
    throw codedError('ERR_CSR', 'not a PKCS#10 certification request')
  let key: KeyObject
  try {
    key = createPublicKey({ key: toDer(infoParts[INFO_KEY]), format: 'der', type: 'spki' })
  } catch (err) {
    throw codedError('ERR_CSR', 'the CSR holds no public key OpenSSL reads', err)
  }
  const oid = asn1.derToOid(oidNode.value)
  const alg = SIGNATURES[oid]
  if (!alg) throw codedError('ERR_CSR', `unsupported CSR signature algorithm ${oid}`)
  if (alg.keyType !== key.asymmetricKeyType)
    throw codedError(
      'ERR_CSR',
      `the CSR signature algorithm ${oid} is not for its ${key.asymmetricKeyType} key`,
    )
  // forge decodes a BIT STRING that looks like DER (an ECDSA signature does) and keeps its bytes here.
  const bits = ((signature as { bitStringContents?: string }).bitStringContents ?? signature.value) as string
  if (!verify(alg.digest, toDer(info!), key, Buffer.from(bits.slice(1), 'binary')))
    throw codedError('ERR_CSR', 'CSR signature does not verify')
  infoParts[INFO_KEY] = forge.pki.publicKeyToAsn1(PLACEHOLDER_KEY)
  return { csr: forge.pki.certificationRequestFromAsn1(req), key }
}

/** The local authority's own key: RSA, which forge encodes itself (its SubjectKeyIdentifier is of it). */
function publicKeyOf(keyPem: string): forge.pki.PublicKey {
  return forge.pki.publicKeyFromAsn1(fromDer(createPublicKey(keyPem).export({ type: 'spki', format: 'der' })))
}

/** Signed by the CA's RSA key, SHA-256; `spki`, when given, is the key the certificate holds. */
function signCert(cert: forge.pki.Certificate, caKeyPem: string, spki?: forge.asn1.Asn1): void {
  cert.signatureOid = cert.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption!
  cert.tbsCertificate = pki.getTBSCertificate(cert)
  if (spki) (cert.tbsCertificate.value as forge.asn1.Asn1[])[TBS_KEY] = spki
  cert.signature = sign('sha256', toDer(cert.tbsCertificate), caKeyPem).toString('binary')
}

interface Extension {
  name: string
  [field: string]: unknown
}
