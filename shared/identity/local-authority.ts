import { createPrivateKey, generateKeyPair, type KeyObject, X509Certificate } from 'node:crypto'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { writeFileAtomic } from '../atomic-file.js'
import { distUrl } from '../dist-url.js'
import { ensureDir } from '../ensure-dir.js'
import { link, readFile, rm } from '../fs-async.js'
import type { CaSpec } from './csr.js'
import type { CsrPool } from './csr-pool.js'

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

/**
 * Loads the CA, creating it on first use (signed on `pool` when given). Safe when two workers
 * race: one creation wins.
 */
export async function loadOrCreateAuthority(dataDir: string, pool?: Pick<CsrPool, 'ca'>): Promise<Authority> {
  const paths = authorityPaths(dataDir)
  try {
    return await loadAuthority(paths)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  await ensureDir(paths.dir, 0o700)
  const { privateKeyPem } = await generateRsaKey()
  const spec: CaSpec = {
    keyPem: privateKeyPem,
    commonName: 'sia-supervisor local authority',
    organization: 'sia-supervisor',
    notBefore: Date.now() - 60_000,
    notAfter: Date.now() + CA_VALIDITY_MS,
  }
  // node-forge (~4 MiB of heap per thread that loads it) only on the first start, and on the CSR
  // pool when there is one: its threads end, the service's stays. Without a pool, csr.js is loaded
  // by path, so that a bundle holding this code does not also hold forge (375 KB its thread would
  // parse at every boot for a path it rarely takes).
  const certPem = pool
    ? await pool.ca(spec)
    : ((await import(distUrl('shared/identity/csr.js').href)) as typeof import('./csr.js')).buildCaCert(spec)
  // Publish key and cert under temporary names, then link the key into place: link() fails if
  // another worker got there first, and then we use theirs.
  const suffix = `.${process.pid}.${Date.now()}.tmp`
  await writeFileAtomic(paths.key + suffix, privateKeyPem, 0o600)
  await writeFileAtomic(paths.cert + suffix, certPem, 0o644)
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
