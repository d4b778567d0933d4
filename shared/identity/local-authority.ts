import { createPrivateKey, generateKeyPair, type KeyObject, X509Certificate } from 'node:crypto'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { writeFilesAtomic } from '../atomic-file.js'
import { distUrl } from '../dist-url.js'
import { ensureDir } from '../ensure-dir.js'
import { codedError } from '../errors.js'
import { link, lstat, mkdir, readFile, rename, rm, syncDir } from '../fs-async.js'
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

const KEY_FILE = 'ca.key.pem'
const CERT_FILE = 'ca.cert.pem'

export function authorityPaths(dataDir: string) {
  const dir = join(dataDir, 'authority')
  return { dir, key: join(dir, KEY_FILE), cert: join(dir, CERT_FILE) }
}

/**
 * Loads the CA, creating it on first use (signed on `pool` when given). Safe when two workers
 * race: one creation wins. The key and the certificate are published together, as one directory
 * renamed into place: a crash between two files left a certificate with no key (every start
 * failed) or a key with no certificate (a new certificate was made for another key, and the old
 * key went on signing: nothing it issued verified). One found so, or whose files do not pair, is
 * moved aside (`authority.broken-<time>`) and made anew. A directory no rename can replace (a
 * symlink to one, a volume mounted there) keeps its place: the pair is published inside it, the
 * key first (a crash between leaves a key alone, which signed nothing), and a broken pair's files
 * are moved aside in it.
 */
export async function loadOrCreateAuthority(dataDir: string, pool?: Pick<CsrPool, 'ca'>): Promise<Authority> {
  const paths = authorityPaths(dataDir)
  for (let attempt = 0; ; attempt++) {
    const found = await loadAuthority(paths).catch((err: NodeJS.ErrnoException) => err)
    if (!(found instanceof Error)) return found
    if ((found.code !== 'ENOENT' && found.code !== 'ERR_AUTHORITY_BROKEN') || attempt === 2) throw found
    // Broken, or still nothing after a publication that found the directory taken (what an
    // older version's crash left: its temporary files, no pair): set aside, made anew.
    // A symlink's place is kept by never renaming it (a rename would move the link); a mount
    // point's, by the rename failing (IN_PLACE).
    const fixed = await lstat(paths.dir).then(
      (s) => s.isSymbolicLink(),
      () => false,
    )
    if (found.code === 'ERR_AUTHORITY_BROKEN' || attempt > 0) {
      const aside = (from: string) =>
        rename(from, `${from}.broken-${Date.now()}`).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err // another worker moved it first
        })
      const asideFiles = () => Promise.all([aside(paths.key), aside(paths.cert)])
      if (fixed) await asideFiles()
      else
        await aside(paths.dir).catch((err: NodeJS.ErrnoException) =>
          IN_PLACE.has(err.code!) ? asideFiles() : Promise.reject(err),
        )
    }
    await publishNew(dataDir, paths.dir, fixed, pool)
  }
}

/** What a rename of (or onto) a directory no rename can replace fails with: a mount point (a bind mount too), a symlink, another file system. */
const IN_PLACE = new Set(['EBUSY', 'ENOTDIR', 'EXDEV'])

/** Makes a CA and puts it in place, unless another worker's is there first. */
async function publishNew(
  dataDir: string,
  dir: string,
  fixed: boolean,
  pool?: Pick<CsrPool, 'ca'>,
): Promise<void> {
  await ensureDir(dataDir)
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
  if (fixed) return publishInside(dir, privateKeyPem, certPem)
  const staging = `${dir}.${process.pid}.${Date.now()}.tmp`
  await mkdir(staging, { mode: 0o700 })
  try {
    await writeFilesAtomic([
      { path: join(staging, KEY_FILE), data: privateKeyPem, mode: 0o600 },
      { path: join(staging, CERT_FILE), data: certPem, mode: 0o644 },
    ])
    // Onto nothing, or onto an empty directory (an older version made it first): the pair
    // appears whole. Onto another worker's authority: ENOTEMPTY, and theirs is used.
    await rename(staging, dir)
    await syncDir(dataDir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code!
    if (IN_PLACE.has(code)) return publishInside(dir, privateKeyPem, certPem)
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
}

/** Each file staged in `dir`, then linked into place, key first: link() fails if another worker's is there. */
async function publishInside(dir: string, keyPem: string, certPem: string): Promise<void> {
  const suffix = `.${process.pid}.${Date.now()}.tmp`
  const [key, cert] = [join(dir, KEY_FILE), join(dir, CERT_FILE)]
  try {
    await writeFilesAtomic([
      { path: key + suffix, data: keyPem, mode: 0o600 },
      { path: cert + suffix, data: certPem, mode: 0o644 },
    ])
    for (const file of [key, cert]) {
      await link(file + suffix, file).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err
      })
    }
    await syncDir(dir)
  } finally {
    await Promise.all([rm(key + suffix, { force: true }), rm(cert + suffix, { force: true })])
  }
}

/**
 * How long before its end an authority is made anew: every leaf it issues ends with it (signCsr),
 * and one issued within this margin is due for refresh (half its life) after the authority is
 * replaced, not after it has expired.
 */
const RENEW_BEFORE_MS = 24 * 3600 * 1000

/**
 * How far ahead of our clock a certificate's notBefore may be: an issuer's clock a little ahead of
 * ours. Beyond it a certificate is refused (every peer would refuse it until then), and an
 * authority made anew.
 */
export const NOT_BEFORE_SKEW_MS = 5 * 60_000

/**
 * Both files, pairing, and the authority within its validity; ENOENT when neither is there;
 * ERR_AUTHORITY_BROKEN for anything between.
 */
async function loadAuthority(paths: { key: string; cert: string }): Promise<Authority> {
  const read = (path: string) => readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => err)
  const [keyPem, certPem] = await Promise.all([read(paths.key), read(paths.cert)])
  const missing = [keyPem, certPem].filter((r) => r instanceof Error && r.code === 'ENOENT').length
  if (missing === 2) throw keyPem
  for (const r of [keyPem, certPem]) if (r instanceof Error && r.code !== 'ENOENT') throw r
  if (missing === 1)
    throw codedError('ERR_AUTHORITY_BROKEN', 'the local authority has only one of its key and certificate')
  const authority = readPair(keyPem as string, certPem as string)
  checkCurrent(authority.cert)
  return authority
}

function readPair(keyPem: string, certPem: string): Authority {
  try {
    const authority = { certPem, key: createPrivateKey(keyPem), cert: new X509Certificate(certPem) }
    if (authority.cert.checkPrivateKey(authority.key)) return authority
  } catch (err) {
    throw codedError('ERR_AUTHORITY_BROKEN', 'the local authority cannot be read', err)
  }
  throw codedError('ERR_AUTHORITY_BROKEN', "the local authority's key and certificate do not pair")
}

/**
 * An authority expired, about to, or not yet valid (made while the clock was wrong) signs leaves
 * that no verifier accepts, for ever: it is made anew.
 */
function checkCurrent(cert: X509Certificate, now = Date.now()): void {
  const [from, to] = [Date.parse(cert.validFrom), Date.parse(cert.validTo)]
  // The skew a certificate is allowed: a clock stepped back a few minutes (an NTP correction)
  // does not replace the authority, and with it every leaf's chain.
  if (from > now + NOT_BEFORE_SKEW_MS) {
    throw codedError(
      'ERR_AUTHORITY_BROKEN',
      `the local authority is not valid until ${new Date(from).toISOString()}`,
    )
  }
  if (to - now < RENEW_BEFORE_MS) {
    throw codedError('ERR_AUTHORITY_BROKEN', `the local authority ends at ${new Date(to).toISOString()}`)
  }
}
