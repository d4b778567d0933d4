import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { buildCsr, signCsr } from '../shared/identity/csr.js'
import { generateRsaKey, loadOrCreateAuthority } from '../shared/identity/local-authority.js'
import { randomSerial } from '../shared/identity/serial.js'

/**
 * A serial whose DER encoding starts with a needless zero byte makes a certificate OpenSSL will
 * not parse ("illegal padding"): with random bytes taken as they come, 1 issue in ~500 failed.
 */
test('every serial is a positive, minimally encoded 16-byte integer', () => {
  const seen = new Set<string>()
  for (let i = 0; i < 20_000; i++) {
    const hex = randomSerial()
    assert.match(hex, /^[4-7][0-9a-f]{31}$/, hex)
    seen.add(hex)
  }
  assert.equal(seen.size, 20_000, 'no repeats')
})

test('certificates the local authority signs parse, and carry the serial as issued', async () => {
  const ca = await loadOrCreateAuthority(mkdtempSync(join(tmpdir(), 'sia-serial-')))
  const caKeyPem = ca.key.export({ type: 'pkcs8', format: 'pem' }).toString()
  const { privateKeyPem } = await generateRsaKey()
  const csrPem = buildCsr({ keyPem: privateKeyPem, commonName: 'demo.app', dnsNames: [], uris: [], ips: [] })
  const serials = new Set<string>()
  for (let i = 0; i < 200; i++) {
    const cert = new X509Certificate(
      signCsr({ caKeyPem, caCertPem: ca.certPem, csrPem, validityMs: 3600_000 }),
    )
    assert.match(cert.serialNumber, /^[4-7][0-9A-F]{31}$/)
    serials.add(cert.serialNumber)
  }
  assert.equal(serials.size, 200)
  assert.match(ca.cert.serialNumber, /^[4-7][0-9A-F]{31}$/)
})
