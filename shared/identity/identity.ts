import { createPrivateKey, X509Certificate } from 'node:crypto'
import { writeFilesAtomic } from '../atomic-file.js'
import type { Config } from '../config/types.js'
import { codedError } from '../errors.js'
import { readFile } from '../fs-async.js'
import type { Logger } from '../logger.js'
import type { CertProvider } from './cert-provider.js'
import type { CsrPool } from './csr-pool.js'
import { principalOf, roleCsrSpec, serviceCsrSpec } from './identity-spec.js'
import { authorityPaths, generateRsaKey, NOT_BEFORE_SKEW_MS } from './local-authority.js'
import { roleCertPath } from './naming.js'
import { parseTargets } from './targets.js'

/** The service identity: what the token service needs for mutual TLS to ZTS. */
export interface Identity {
  keyPem: string
  certPem: string
  caPem: string
}

export { roleCertPath } from './naming.js'

/**
 * Refuses a certificate that would be worse than none: unparsable, for another key, another name,
 * already expired or not yet valid. Checked before anything is written, so a bad answer never
 * replaces a good file.
 */
export function checkIssued(certPem: string, keyPem: string, commonName: string): X509Certificate {
  let cert: X509Certificate
  try {
    cert = new X509Certificate(certPem)
  } catch (err) {
    throw codedError('ERR_BAD_CERT', 'the provider returned an unparsable certificate', err)
  }
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) {
    throw codedError('ERR_BAD_CERT', 'the certificate is not for our key')
  }
  const cn = /^CN=(.*)$/m.exec(cert.subject)?.[1]
  if (cn !== commonName)
    throw codedError('ERR_BAD_CERT', `the certificate is for CN=${cn}, not ${commonName}`)
  if (Date.parse(cert.validTo) <= Date.now()) throw codedError('ERR_BAD_CERT', 'the certificate has expired')
  if (Date.parse(cert.validFrom) > Date.now() + NOT_BEFORE_SKEW_MS) {
    throw codedError(
      'ERR_BAD_CERT',
      `the certificate is not valid until ${new Date(cert.validFrom).toISOString()}`,
    )
  }
  return cert
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** Every certificate of a PEM bundle; ERR_BAD_CERT if it holds none, or one that does not parse. */
function certificatesOf(pem: string, what: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? []
  if (blocks.length === 0) throw codedError('ERR_BAD_CERT', `${what} is not a PEM certificate`)
  try {
    return blocks.map((block) => new X509Certificate(block))
  } catch (err) {
    throw codedError('ERR_BAD_CERT', `${what} holds an unparsable certificate`, err)
  }
}

function signedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey)
  } catch {
    return false // a key verify() cannot use signed nothing it could check
  }
}

/**
 * Refuses a signer (ZTS's x509CertificateSigner, written to CA_CERT_FILE) that did not issue the
 * certificate, directly or through the intermediates of INTERMEDIATE_CERT_BUNDLE: garbage, or
 * another CA, replaced the CA file that peers verify us with, and the refresh said it succeeded.
 * An empty signer is no claim (the CA file is left as it is).
 */
export function checkSigner(cert: X509Certificate, caPem: string, intermediatesPem: string): void {
  if (!caPem.trim()) return
  const signers = certificatesOf(caPem, 'the signing certificate')
  const links = intermediatesPem.trim()
    ? certificatesOf(intermediatesPem, 'the CA bundle').filter(
        (c) => c.fingerprint256 !== cert.fingerprint256,
      )
    : []
  // Up from the certificate, each intermediate used at most once: a loop in what was sent ends.
  const chains = (c: X509Certificate, unused: X509Certificate[]): boolean =>
    signers.some((s) => signedBy(c, s)) ||
    unused.some((link, i) => signedBy(c, link) && chains(link, unused.toSpliced(i, 1)))
  if (!chains(cert, links)) {
    const issuer = cert.issuer.split('\n').join(',')
    throw codedError(
      'ERR_BAD_CERT',
      `the signing certificate did not issue the certificate (issuer ${issuer})`,
    )
  }
}

function describeCert(cert: X509Certificate) {
  return {
    subject: cert.subject.split('\n').join(','),
    issuer: cert.issuer.split('\n').join(','),
    notBefore: new Date(cert.validFrom).toISOString(),
    notAfter: new Date(cert.validTo).toISOString(),
    serial: cert.serialNumber,
  }
}

/** Reads the identity on disk if it is usable (key and cert match, within its validity). */
export async function readIdentity(config: Config): Promise<Identity | undefined> {
  const read = await readIdentityOrWhy(config)
  return read instanceof Error ? undefined : read
}

/** readIdentity, or why the files are not a valid identity (missing, unparsable, not a pair, expired, not yet valid). */
export async function readIdentityOrWhy(config: Config): Promise<Identity | Error> {
  try {
    const [keyPem, certPem, caPem] = await Promise.all([
      readFile(config.keyFile, 'utf8'),
      readFile(config.certFile, 'utf8'),
      readFile(config.caCertFile, 'utf8').catch(() => ''),
    ])
    const cn = /^CN=(.*)$/m.exec(new X509Certificate(certPem).subject)?.[1] ?? ''
    checkIssued(certPem, keyPem, cn)
    return { keyPem, certPem, caPem }
  } catch (err) {
    return err as Error
  }
}

/** The CN of an identity's certificate. */
export function commonNameOf(id: Identity): string {
  return /^CN=(.*)$/m.exec(new X509Certificate(id.certPem).subject)?.[1] ?? ''
}

/**
 * Files: a third party's certificate for another principal than ATHENZ_DOMAIN.SERVICEACCOUNT is
 * used (tokens are fetched as the one it names) but said, once: role certificate requests name the
 * configured principal, which ZTS refuses for a key certified as another.
 */
export function sayIfAnotherPrincipal(config: Config, id: Identity, log: Logger): void {
  const names = commonNameOf(id)
  const principal = principalOf(config)
  if (names === principal) return
  log.warn(
    { event: 'certificate.files.principal', certFile: config.certFile, names, principal },
    `${config.certFile} names ${names}, not ${principal} (ATHENZ_DOMAIN.SERVICEACCOUNT): role certificates are asked for ${principal}`,
  )
}

/**
 * Writes an identity to every KEY_FILE and CERT_FILE path (comma-separated, as SIA) and the CA
 * file, as one set: nothing is replaced unless every file was written in full (a full disk leaves
 * the old pair, not a new key beside the old cert). Then keys first, then certs: a reader pairing
 * them never sees a cert for a key that is not there. `certPem` is written as given (with any
 * intermediate certificates).
 */
export async function storeIdentity(config: Config, id: Identity): Promise<void> {
  const caChanged = id.caPem && (await readFile(config.caCertFile, 'utf8').catch(() => '')) !== id.caPem
  await writeFilesAtomic([
    ...config.keyFiles.map((path) => ({ path, data: id.keyPem, mode: 0o600 })),
    ...config.certFiles.map((path) => ({ path, data: id.certPem, mode: 0o644 })),
    ...(caChanged ? [{ path: config.caCertFile, data: id.caPem, mode: 0o644 }] : []),
  ])
}

/**
 * Every KEY_FILE and CERT_FILE path holds the identity read from the first: those that do not (a
 * path added since, an emptyDir wiped while the first is on a persistent volume) are written
 * again, the whole set. So is each role certificate's key file (ROLE_CERT_KEY_FILE_OUTPUT): the
 * service key, kept a pair with its certificate. Resolves true when it wrote.
 */
export async function completeOutputs(config: Config, id: Identity): Promise<boolean> {
  const holds = async (path: string, want: string) => (await readFile(path, 'utf8').catch(() => '')) === want
  const roleKeys = config.roleCertKeyFileOutput
    ? parseTargets(config.targetDomainRoles).map((t) => roleCertPath(config, t, 'key'))
    : []
  // Every file read at once: the identity's paths, and the role key files that lack the key.
  const [held, missing] = await Promise.all([
    Promise.all([
      ...config.keyFiles.map((path) => holds(path, id.keyPem)),
      ...config.certFiles.map((path) => holds(path, id.certPem)),
    ]).then((all) => all.every(Boolean)),
    Promise.all(roleKeys.map(async (path) => ((await holds(path, id.keyPem)) ? [] : [path]))).then((m) =>
      m.flat(),
    ),
  ])
  if (!held) await storeIdentity(config, id)
  if (missing.length > 0)
    await writeFilesAtomic(missing.map((path) => ({ path, data: id.keyPem, mode: 0o600 })))
  return !held || missing.length > 0
}

/** Runs `write` holding what keeps another thread from writing the same files meanwhile. */
export type Exclusive = <T>(write: () => Promise<T>) => Promise<T>

export interface IdentityRefresher {
  /**
   * Fetches a new instance identity (key and certificate) and writes it. The role certificates
   * for its key are `refreshRoles`'s: the caller adopts the new identity first, so that a role
   * certificate that fails never leaves the services on the previous one, no longer on disk.
   * `ask` bounds the provider's answer alone (by default `signal`): what follows it (the CA
   * bundle, the write) has all of `signal`, since nothing else could stand in for what it issued.
   */
  refreshInstance(signal: AbortSignal, ask?: AbortSignal): Promise<Identity>
  /**
   * Role certificates for `keyPem`; throws ERR_ROLE_CERTS if any failed (the others are written),
   * the failures as its `cause`.
   */
  refreshRoles(keyPem: string, signal: AbortSignal): Promise<void>
}

export function createIdentityRefresher(deps: {
  config: Config
  log: Logger
  provider: CertProvider
  pool: CsrPool
  /** After each new instance identity is written: what the files hold (intermediates included). */
  onIssued?: (stored: Identity) => void
  /** Before each set of files is written (the failpoint `certificate.before-write`). */
  beforeWrite?: () => Promise<void>
  /** Runs each write of a set of files alone (a successor's thread writes the same files). */
  exclusive?: Exclusive
}): IdentityRefresher {
  const { config, log, provider, pool, beforeWrite = async () => {}, exclusive = (write) => write() } = deps
  const targets = parseTargets(config.targetDomainRoles)
  const principal = principalOf(config)

  let bundleWarned = false
  /** INTERMEDIATE_CERT_BUNDLE from the provider (ZTS /cacerts/{name}), appended to the cert file as SIA. */
  async function intermediates(signal: AbortSignal): Promise<string> {
    const name = config.intermediateCertBundle
    if (!name) return ''
    if (!provider.caBundle) {
      if (!bundleWarned) {
        bundleWarned = true
        log.warn(
          { event: 'certificate.bundle.unsupported', provider: provider.name, bundle: name },
          `the ${provider.name} provider has no CA bundles: INTERMEDIATE_CERT_BUNDLE is ignored`,
        )
      }
      return ''
    }
    const pem = (await provider.caBundle(name, signal)).trim()
    if (pem && !/^-----BEGIN CERTIFICATE-----[\s\S]*-----END CERTIFICATE-----$/.test(pem)) {
      throw codedError('ERR_BAD_CERT', `the CA bundle ${name} is not a PEM certificate bundle`)
    }
    return pem ? `${pem}\n` : ''
  }

  async function roleCerts(keyPem: string, signal: AbortSignal): Promise<unknown[]> {
    if (targets.length === 0) return []
    log.info(
      { event: 'certificate.role.requesting', targets: config.targetDomainRoles, provider: provider.name },
      `requesting role certificates for ${config.targetDomainRoles.join(',')}`,
    )
    const results = await Promise.allSettled(
      targets.map(async (t) => {
        const certPem = await provider.roleCert(await pool.csr(roleCsrSpec(config, keyPem, t)), t, signal)
        const cert = checkIssued(certPem, keyPem, `${t.domain}:role.${t.role}`)
        const file = roleCertPath(config, t)
        await beforeWrite()
        await exclusive(() =>
          writeFilesAtomic([
            ...(config.roleCertKeyFileOutput
              ? [{ path: roleCertPath(config, t, 'key'), data: keyPem, mode: 0o600 }]
              : []),
            { path: file, data: certPem, mode: 0o644 },
          ]),
        )
        log.info(
          { event: 'certificate.issued', kind: 'role', file, ...describeCert(cert) },
          `new role certificate for ${t.domain}:role.${t.role}`,
        )
      }),
    )
    return results.flatMap((r, i) => {
      if (r.status === 'fulfilled') return []
      log.error(
        {
          event: 'certificate.role.failed',
          domain: targets[i]!.domain,
          role: targets[i]!.role,
          err: r.reason,
        },
        'role certificate failed',
      )
      return [r.reason]
    })
  }

  return {
    async refreshInstance(signal, ask = signal) {
      const { privateKeyPem: keyPem } = await generateRsaKey()
      const csrPem = await pool.csr(serviceCsrSpec(config, keyPem))
      const { certPem, caPem } = await provider.instance(csrPem, ask)
      const cert = checkIssued(certPem, keyPem, principal)
      const id = { keyPem, certPem, caPem }
      // The new identity authenticates what follows, the CA bundle included; refused, or not
      // written, the one in the files authenticates again (ZTS calls went on with the refused one).
      const previous = provider.useIdentity?.(id)
      let stored: Identity
      try {
        const chain = await intermediates(signal)
        // Intermediates ZTS sent after the certificate itself are links too.
        checkSigner(cert, caPem, `${certPem}\n${chain}`)
        stored = { ...id, certPem: id.certPem + chain }
        await beforeWrite()
        await exclusive(() => storeIdentity(config, stored))
      } catch (err) {
        provider.useIdentity?.(previous)
        throw err
      }
      deps.onIssued?.(stored)
      log.info(
        { event: 'certificate.issued', kind: 'instance', file: config.certFile, ...describeCert(cert) },
        'new instance certificate',
      )
      // What the files hold, intermediates included: the chain the certificate and token services
      // present to ZTS from now on, as they do after a restart reads it from disk (and as SIA's).
      return stored
    },
    async refreshRoles(keyPem, signal) {
      const failed = await roleCerts(keyPem, signal)
      if (failed.length) {
        // The failures themselves as its cause, for a caller that tells a refusal from a blip.
        throw codedError(
          'ERR_ROLE_CERTS',
          `${failed.length} of ${targets.length} role certificates failed`,
          failed,
        )
      }
    },
  }
}

/**
 * Whether the provider configured now issued `cert`: after ENDPOINT was set, the local authority's
 * certificate was reused (and presented to ZTS) until the next refresh; after it was cleared, or
 * the local authority made anew, one the current authority did not sign.
 */
async function issuedByProvider(cert: X509Certificate, config: Config): Promise<boolean> {
  const ca = await readFile(authorityPaths(config.dataDir).cert, 'utf8').catch(() => undefined)
  let byLocal = false
  try {
    // An unreadable one (empty, garbage) signed nothing, and one out of its validity nothing that
    // verifies: the local authority repairs it, or makes it anew, at the next issue.
    const authority = ca === undefined ? undefined : new X509Certificate(ca)
    byLocal =
      authority !== undefined &&
      Date.parse(authority.validFrom) <= Date.now() &&
      Date.now() < Date.parse(authority.validTo) &&
      cert.checkIssued(authority) &&
      cert.verify(authority.publicKey)
  } catch {}
  return config.endpoint ? !byLocal : byLocal
}

/**
 * The identity on disk if it is ours: usable (`readIdentity`), naming the principal the
 * configuration does now (ATHENZ_DOMAIN, SERVICEACCOUNT), issued by the provider configured now.
 * Another is not reused, and not kept in place of a fetch that failed or of the backup (a
 * persistent DATA_DIR after SERVICEACCOUNT changed served the old principal's certificate).
 */
export async function readOwnIdentity(config: Config): Promise<Identity | undefined> {
  const identity = await readIdentity(config)
  if (!identity) return undefined
  const cert = new X509Certificate(identity.certPem)
  const cn = /^CN=(.*)$/m.exec(cert.subject)?.[1]
  return cn === principalOf(config) && (await issuedByProvider(cert, config)) ? identity : undefined
}

/** When a certificate is due for refresh: REFRESH_INTERVAL after its issue, or half-way through its validity if sooner. */
export function refreshDueAt(pem: string, refreshInterval: number): number {
  const cert = new X509Certificate(pem)
  const from = Date.parse(cert.validFrom)
  const to = Date.parse(cert.validTo)
  return Math.min(from + refreshInterval, from + (to - from) / 2)
}

/** When the first certificate of `pem` ends (epoch ms). */
export function endsAt(pem: string): number {
  return Date.parse(new X509Certificate(pem).validTo)
}

/** When what a refresh renews is due, and when the first of it expires (ms from `now`). */
export interface RefreshPlan {
  dueInMs: number
  expiresInMs: number
  /** When the last of them becomes valid (ms from `now`; > 0: one is not valid yet). */
  startsInMs: number
}

/**
 * When our identity on disk (`readOwnIdentity`), and every role certificate, is due for refresh:
 * REFRESH_INTERVAL after it was issued, or half-way through its validity if that comes first (0:
 * due now); and when the first of them expires. Undefined when anything is missing or unreadable.
 */
export async function refreshPlan(
  identity: Identity,
  config: Config,
  now = Date.now(),
  /** False for a third party's certificate (files): only the role certificates are ours to renew. */
  instance = true,
): Promise<RefreshPlan | undefined> {
  // REFRESH_INTERVAL=0: no periodic refresh, but none is let expire either (half-way through it).
  const dueAt = (pem: string) => refreshDueAt(pem, config.refreshInterval || Number.POSITIVE_INFINITY)
  try {
    const roles = await Promise.all(
      parseTargets(config.targetDomainRoles).map((t) => readFile(roleCertPath(config, t), 'utf8')),
    )
    const ours = [...(instance ? [identity.certPem] : []), ...roles]
    const expiresInMs = Math.min(...ours.map((pem) => Date.parse(new X509Certificate(pem).validTo))) - now
    const startsInMs = Math.max(...ours.map((pem) => Date.parse(new X509Certificate(pem).validFrom))) - now
    // A role certificate for another key (its refresh failed after the key was renewed) is due.
    const key = roles.length ? createPrivateKey(identity.keyPem) : undefined
    if (key && !roles.every((pem) => new X509Certificate(pem).checkPrivateKey(key))) {
      return { dueInMs: 0, expiresInMs, startsInMs }
    }
    return { dueInMs: Math.max(0, Math.min(...ours.map(dueAt)) - now), expiresInMs, startsInMs }
  } catch {
    return undefined
  }
}

/** How long our identity stays fresh (`refreshPlan`); 0 when due, missing or unreadable: then start() refreshes at once. */
export async function freshForMs(identity: Identity, config: Config): Promise<number> {
  return (await refreshPlan(identity, config))?.dueInMs ?? 0
}
