import forge from 'node-forge'
import { codedError } from '../errors.js'

/**
 * DER between node-forge's ASN.1 objects and Node's buffers, and PEM done with Buffer's base64:
 * forge's own PEM scanner and base64 walk every character in JavaScript, and on the CSR pool's
 * short-lived threads that loop alone sometimes woke the optimizing compiler (~5 MiB of code
 * pages that stay resident once touched).
 */
export const fromDer = (der: Buffer): forge.asn1.Asn1 => forge.asn1.fromDer(der.toString('binary'))

export const toDer = (asn1: forge.asn1.Asn1): Buffer =>
  Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary')

/** RFC 7468 text: the base64 body in lines of 64, LF line ends (as Go's encoding/pem and OpenSSL). */
export function toPem(label: string, der: Buffer): string {
  const body = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '')
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`
}

/**
 * The DER of the first CERTIFICATE REQUEST block (or NEW CERTIFICATE REQUEST, as some tools label
 * it) of `pem`. Linear in the input: the body's class holds neither '-' nor the label.
 */
export function csrDer(pem: string): Buffer {
  const m =
    /-----BEGIN (NEW )?CERTIFICATE REQUEST-----([A-Za-z0-9+/=\s]*)-----END \1?CERTIFICATE REQUEST-----/.exec(
      pem,
    )
  if (!m) throw codedError('ERR_CSR', 'no CERTIFICATE REQUEST block in the PEM')
  return Buffer.from(m[2]!, 'base64')
}
