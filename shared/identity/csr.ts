import forge from 'node-forge'
import { randomSerial } from './serial.js'
import { DEFAULT_SUBJECT, FORGE_NAMES, type SubjectAttribute } from './subject.js'

/**
 * CSRs as k8s-athenz-sia builds them, and a CA that signs them: pure node-forge functions over
 * PEM strings, so they run on the piscina pool (and in the ZTS test double) unchanged.
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
  const key = forge.pki.privateKeyFromPem(spec.keyPem)
  const csr = forge.pki.createCertificationRequest()
  csr.publicKey = forge.pki.rsa.setPublicKey(key.n, key.e)
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
  csr.sign(key, forge.md.sha256.create())
  return forge.pki.certificationRequestToPem(csr)
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
  const key = forge.pki.privateKeyFromPem(spec.keyPem)
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.rsa.setPublicKey(key.n, key.e)
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
  cert.sign(key, forge.md.sha256.create())
  return forge.pki.certificateToPem(cert)
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
  const csr = forge.pki.certificationRequestFromPem(csrPem)
  if (!csr.verify()) throw Object.assign(new Error('CSR signature does not verify'), { code: 'ERR_CSR' })
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
    publicKeyPem: forge.pki.publicKeyToPem(csr.publicKey as forge.pki.PublicKey),
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
  const csr = forge.pki.certificationRequestFromPem(req.csrPem)
  if (!csr.verify()) throw Object.assign(new Error('CSR signature does not verify'), { code: 'ERR_CSR' })
  const ca = forge.pki.certificateFromPem(req.caCertPem)
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
  cert.sign(forge.pki.privateKeyFromPem(req.caKeyPem), forge.md.sha256.create())
  return forge.pki.certificateToPem(cert)
}

interface Extension {
  name: string
  [field: string]: unknown
}
