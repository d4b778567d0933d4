import { createPrivateKey, generateKeyPair, type KeyObject, X509Certificate } from 'node:crypto'
import { link, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { writeFileAtomic } from '../atomic-file.js'
import { ensureDir } from '../ensure-dir.js'
import { randomSerial } from './serial.js'

/**
 * The embedded authority of the `local` provider (DESIGN.md §6): a CA created once under the
 * data directory, which signs the service certificate, role certificates and tokens.
 */
export interface Authority {
  certPem: string
  key: KeyObject
  cert: X509Certificate
}

const generate = promisify(generateKeyPair)
const CA_VALIDITY_MS = 10 * 365 * 24 * 3600 * 1000

export async function generateRsaKey(): Promise<{ privateKeyPem: string; publicKeyPem: string }> {
  const { privateKey, publicKey } = await generate('rsa', { modulusLength: 2048 })
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  }
}

export function authorityPaths(dataDir: string) {
  const dir = join(dataDir, 'authority')
  return { dir, key: join(dir, 'ca.key.pem'), cert: join(dir, 'ca.cert.pem') }
}

/** Loads the CA, creating it on first use. Safe when two workers race: one creation wins. */
export async function loadOrCreateAuthority(dataDir: string): Promise<Authority> {
  const paths = authorityPaths(dataDir)
  try {
    return await loadAuthority(paths)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  await ensureDir(paths.dir, 0o700)
  const { privateKeyPem, publicKeyPem } = await generateRsaKey()
  // node-forge (~4 MiB of heap per thread) only on the first start, to create the CA.
  const { default: forge } = await import('node-forge')
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.publicKeyFromPem(publicKeyPem)
  cert.serialNumber = randomSerial()
  cert.validity.notBefore = new Date(Date.now() - 60_000)
  cert.validity.notAfter = new Date(Date.now() + CA_VALIDITY_MS)
  const subject = [
    { name: 'commonName', value: 'sia-supervisor local authority' },
    { name: 'organizationName', value: 'sia-supervisor' },
  ]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ])
  cert.sign(forge.pki.privateKeyFromPem(privateKeyPem), forge.md.sha256.create())
  // Publish key and cert under temporary names, then link the key into place: link() fails if
  // another worker got there first, and then we use theirs.
  const suffix = `.${process.pid}.${Date.now()}.tmp`
  await writeFileAtomic(paths.key + suffix, privateKeyPem, 0o600)
  await writeFileAtomic(paths.cert + suffix, forge.pki.certificateToPem(cert), 0o644)
  try {
    await link(paths.cert + suffix, paths.cert)
    await link(paths.key + suffix, paths.key)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  } finally {
    await rm(paths.key + suffix, { force: true })
    await rm(paths.cert + suffix, { force: true })
  }
  return loadAuthority(paths)
}

async function loadAuthority(paths: { key: string; cert: string }): Promise<Authority> {
  const [keyPem, certPem] = await Promise.all([readFile(paths.key, 'utf8'), readFile(paths.cert, 'utf8')])
  return { certPem, key: createPrivateKey(keyPem), cert: new X509Certificate(certPem) }
}
