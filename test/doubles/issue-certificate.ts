import forge from 'node-forge'
import type { Authority } from '../../shared/identity/local-authority.js'
import { randomSerial } from '../../shared/identity/serial.js'

/** Certificates for the test doubles' servers and clients, signed by a local authority. */
export interface CertificateRequest {
  publicKeyPem: string
  commonName: string
  dnsNames?: string[]
  uris?: string[]
  ips?: string[]
  validityMs: number
  /** When it becomes valid (a minute ago by default, as the authorities here backdate). */
  notBefore?: number
  /** An intermediate CA's certificate rather than a leaf. */
  ca?: boolean
}

/** Issues a leaf certificate signed by the authority. */
export function issueCertificate(ca: Authority, req: CertificateRequest): string {
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.publicKeyFromPem(req.publicKeyPem)
  cert.serialNumber = randomSerial()
  cert.validity.notBefore = new Date(req.notBefore ?? Date.now() - 60_000)
  cert.validity.notAfter = new Date(Date.now() + req.validityMs)
  cert.setSubject([{ name: 'commonName', value: req.commonName }])
  cert.setIssuer(forge.pki.certificateFromPem(ca.certPem).subject.attributes)
  const altNames = [
    ...(req.dnsNames ?? []).map((value) => ({ type: 2, value })),
    ...(req.uris ?? []).map((value) => ({ type: 6, value })),
    ...(req.ips ?? []).map((ip) => ({ type: 7, ip })),
  ]
  cert.setExtensions(
    req.ca
      ? [
          { name: 'basicConstraints', cA: true, critical: true },
          { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
        ]
      : [
          { name: 'basicConstraints', cA: false },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
          ...(altNames.length ? [{ name: 'subjectAltName', altNames }] : []),
        ],
  )
  const caKeyPem = ca.key.export({ type: 'pkcs8', format: 'pem' }).toString()
  cert.sign(forge.pki.privateKeyFromPem(caKeyPem), forge.md.sha256.create())
  return forge.pki.certificateToPem(cert)
}
