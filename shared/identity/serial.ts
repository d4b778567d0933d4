import { randomBytes } from 'node:crypto'

/**
 * A certificate serial as forge takes it (hex): 16 random bytes, the first in 0x40–0x7f, so the
 * DER INTEGER is positive and minimal as RFC 5280 requires, with 126 bits of randomness. A
 * leading zero byte (1 serial in 256 when the bytes are taken as they come) makes an encoding
 * OpenSSL refuses ("illegal padding"): the certificate would not parse.
 */
export function randomSerial(): string {
  const bytes = randomBytes(16)
  bytes[0] = ((bytes[0] ?? 0) & 0x3f) | 0x40
  return bytes.toString('hex')
}
