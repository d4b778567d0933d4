import assert from 'node:assert/strict'
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, describe, it } from 'node:test'
import { loadConfig } from '../shared/config/load.js'
import type { Config } from '../shared/config/types.js'
import { backoffDelay, capToEnd } from '../shared/identity/backoff.js'
import type { CertProvider } from '../shared/identity/cert-provider.js'
import { readCsr, signCsr } from '../shared/identity/csr.js'
import { createCsrPool } from '../shared/identity/csr-pool.js'
import {
  createIdentityRefresher,
  type IdentityRefresher,
  readIdentity,
  readIdentityOrWhy,
  roleCertPath,
} from '../shared/identity/identity.js'
import { generateRsaKey, loadOrCreateAuthority } from '../shared/identity/local-authority.js'
import { createLocalCertProvider } from '../shared/identity/local-cert-provider.js'
import { createLogger } from '../shared/logger.js'
import { issueCertificate } from './doubles/issue-certificate.js'
import { fillDisk, smallTmpfs } from './support/tmpfs.js'

const pool = createCsrPool()
after(() => pool.close())

function config(env: Record<string, string> = {}): Config {
  const inv = loadConfig([], { DATA_DIR: mkdtempSync(join(tmpdir(), 'sia-refresh-')), ...env })
  assert.equal(inv.kind, 'run')
  return (inv as { config: Config }).config
}

const log = createLogger('certificate', 'silent')

/** What the certificate service does on each refresh: the instance identity, then its role certs. */
async function refreshAll(refresher: IdentityRefresher): Promise<void> {
  const signal = new AbortController().signal
  const id = await refresher.refreshInstance(signal)
  await refresher.refreshRoles(id.keyPem, signal)
}

/** True when the private key `keyPem` is the key of the first certificate of `certPem`. */
const pairs = (keyPem: string, certPem: string) =>
  new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem))

describe('identity refresh', () => {
  it('returns what the files hold, INTERMEDIATE_CERT_BUNDLE included: the chain presented from then on', async () => {
    const cfg = config({ INTERMEDIATE_CERT_BUNDLE: 'athenz' })
    const local = createLocalCertProvider(cfg.dataDir, pool, cfg.refreshInterval)
    // Any other certificate stands for the bundle: the local authority's own, once it exists.
    const provider: CertProvider = {
      ...local,
      caBundle: async () => readFileSync(join(cfg.dataDir, 'authority', 'ca.cert.pem'), 'utf8').trim(),
    }
    const refresher = createIdentityRefresher({ config: cfg, log, provider, pool })
    const id = await refresher.refreshInstance(new AbortController().signal)
    const onDisk = readFileSync(cfg.certFile, 'utf8')
    assert.equal(id.certPem, onDisk)
    assert.equal(onDisk.match(/-----BEGIN CERTIFICATE-----/g)?.length, 2, 'leaf and intermediate')
    assert.ok(pairs(id.keyPem, id.certPem))
  })

  it('never replaces good files with a certificate for another key, name or an expired one', async () => {
    const cfg = config({ TARGET_DOMAIN_ROLES: 'demo:role.reader' })
    const local = createLocalCertProvider(cfg.dataDir, pool, cfg.refreshInterval)
    await refreshAll(createIdentityRefresher({ config: cfg, log, provider: local, pool }))
    const files = [cfg.keyFile, cfg.certFile, roleCertPath(cfg, { domain: 'demo', role: 'reader' })]
    const good = files.map((f) => readFileSync(f, 'utf8'))
    const goodCert = good[1]!

    const bad: Record<string, CertProvider> = {
      garbage: {
        name: 'bad',
        instance: async () => ({ certPem: 'not a cert', caPem: '' }),
        roleCert: local.roleCert,
      },
      'other key': {
        name: 'bad',
        instance: async () => ({ certPem: goodCert, caPem: '' }),
        roleCert: local.roleCert,
      },
    }
    for (const [why, provider] of Object.entries(bad)) {
      await assert.rejects(
        refreshAll(createIdentityRefresher({ config: cfg, log, provider, pool })),
        { code: 'ERR_BAD_CERT' },
        why,
      )
      assert.deepEqual(
        files.map((f) => readFileSync(f, 'utf8')),
        good,
        why,
      )
    }
  })

  it('refuses a certificate not yet valid (beyond a few minutes of skew): nothing written, and one on disk is no identity', async () => {
    const cfg = config({ TARGET_DOMAIN_ROLES: 'demo:role.reader' })
    const local = createLocalCertProvider(cfg.dataDir, pool, cfg.refreshInterval)
    await refreshAll(createIdentityRefresher({ config: cfg, log, provider: local, pool }))
    const files = [
      cfg.keyFile,
      cfg.certFile,
      cfg.caCertFile,
      roleCertPath(cfg, { domain: 'demo', role: 'reader' }),
    ]
    const good = files.map((f) => readFileSync(f, 'utf8'))
    const ca = await loadOrCreateAuthority(cfg.dataDir)
    const DAY = 24 * 3600_000
    // The authority's own certificate for the CSR's key and name, valid from `notBefore`.
    const from = (notBefore: number) => async (csrPem: string) => {
      const csr = readCsr(csrPem)
      const { publicKeyPem, commonName } = csr
      return issueCertificate(ca, { publicKeyPem, commonName, validityMs: 30 * DAY, notBefore })
    }
    const provider = (notBefore: number): CertProvider => ({
      name: 'early',
      instance: async (csrPem) => ({ certPem: await from(notBefore)(csrPem), caPem: ca.certPem }),
      roleCert: from(notBefore),
    })
    const signal = new AbortController().signal
    const weekAhead = createIdentityRefresher({
      config: cfg,
      log,
      provider: provider(Date.now() + 7 * DAY),
      pool,
    })
    await assert.rejects(weekAhead.refreshInstance(signal), {
      code: 'ERR_BAD_CERT',
      message: /not valid until/,
    })
    await assert.rejects(weekAhead.refreshRoles(good[0]!, signal), { code: 'ERR_ROLE_CERTS' })
    assert.deepEqual(
      files.map((f) => readFileSync(f, 'utf8')),
      good,
      'no file replaced',
    )

    // An issuer's clock a minute ahead of ours is not a reason to refuse.
    const minuteAhead = createIdentityRefresher({
      config: cfg,
      log,
      provider: provider(Date.now() + 60_000),
      pool,
    })
    await refreshAll(minuteAhead)
    assert.ok(await readIdentity(cfg))

    // On disk (written by something else, or by an older version): not usable, so not reused at boot.
    const keyPem = readFileSync(cfg.keyFile, 'utf8')
    const publicKeyPem = createPublicKey(createPrivateKey(keyPem))
      .export({ type: 'spki', format: 'pem' })
      .toString()
    const commonName = new X509Certificate(readFileSync(cfg.certFile)).subject.replace(/^[\s\S]*CN=/, '')
    writeFileSync(
      cfg.certFile,
      issueCertificate(ca, {
        publicKeyPem,
        commonName,
        validityMs: 30 * DAY,
        notBefore: Date.now() + 7 * DAY,
      }),
    )
    assert.equal(await readIdentity(cfg), undefined)
    assert.match(((await readIdentityOrWhy(cfg)) as Error).message, /not valid until/)
  })

  it('refuses a signing certificate (the CA file) that did not issue the certificate: nothing written', async () => {
    const cfg = config()
    const local = createLocalCertProvider(cfg.dataDir, pool, cfg.refreshInterval)
    await refreshAll(createIdentityRefresher({ config: cfg, log, provider: local, pool }))
    const files = [cfg.keyFile, cfg.certFile, cfg.caCertFile]
    const good = files.map((f) => readFileSync(f, 'utf8'))
    const other = await loadOrCreateAuthority(mkdtempSync(join(tmpdir(), 'sia-other-ca-')))
    const signers = {
      garbage: 'garbage, not a CA',
      'a PEM block that does not parse': '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----',
      'another CA': other.certPem,
    }
    const inFiles = { keyPem: good[0]!, certPem: good[1]!, caPem: good[2]! }
    for (const [why, caPem] of Object.entries(signers)) {
      // What ZTS calls authenticate with: the identity in the files, again, once one is refused.
      let current: typeof inFiles | undefined = inFiles
      const provider: CertProvider = {
        ...local,
        instance: async (csrPem, signal) => ({ ...(await local.instance(csrPem, signal)), caPem }),
        useIdentity: (id) => {
          const was = current
          current = id
          return was
        },
      }
      await assert.rejects(
        refreshAll(createIdentityRefresher({ config: cfg, log, provider, pool })),
        { code: 'ERR_BAD_CERT' },
        why,
      )
      assert.equal(current, inFiles, `${why}: the refused identity is not used`)
      assert.deepEqual(
        files.map((f) => readFileSync(f, 'utf8')),
        good,
        why,
      )
    }
  })

  it('a certificate issued by an intermediate: accepted through INTERMEDIATE_CERT_BUNDLE, refused without it', async () => {
    const root = await loadOrCreateAuthority(mkdtempSync(join(tmpdir(), 'sia-root-ca-')))
    const key = await generateRsaKey()
    const intermediatePem = issueCertificate(root, {
      publicKeyPem: key.publicKeyPem,
      commonName: 'intermediate',
      validityMs: 3600_000,
      ca: true,
    })
    // ZTS's signer is the root; the certificate is the intermediate's, which the bundle holds.
    const provider: CertProvider = {
      name: 'chain',
      instance: async (csrPem) => ({
        certPem: signCsr({
          caKeyPem: key.privateKeyPem,
          caCertPem: intermediatePem,
          csrPem,
          validityMs: 3600_000,
        }),
        caPem: root.certPem,
      }),
      roleCert: async () => '',
      caBundle: async () => intermediatePem,
    }
    const signal = new AbortController().signal
    const bundled = config({ INTERMEDIATE_CERT_BUNDLE: 'athenz' })
    const id = await createIdentityRefresher({ config: bundled, log, provider, pool }).refreshInstance(signal)
    assert.equal(readFileSync(bundled.caCertFile, 'utf8'), root.certPem)
    assert.equal(readFileSync(bundled.certFile, 'utf8'), id.certPem)
    // The intermediate sent after the certificate itself, as a chain: a link too.
    const chained: CertProvider = {
      ...provider,
      instance: async (csrPem, signal) => {
        const issued = await provider.instance(csrPem, signal)
        return { ...issued, certPem: `${issued.certPem}${intermediatePem}` }
      },
    }
    const sentChain = config()
    await createIdentityRefresher({ config: sentChain, log, provider: chained, pool }).refreshInstance(signal)
    assert.equal(readFileSync(sentChain.caCertFile, 'utf8'), root.certPem)
    const alone = config()
    await assert.rejects(
      createIdentityRefresher({ config: alone, log, provider, pool }).refreshInstance(signal),
      {
        code: 'ERR_BAD_CERT',
        message: /did not issue/,
      },
    )
    assert.deepEqual(readdirSync(alone.dataDir), [], 'nothing written')
  })

  it('a full disk while writing a new identity leaves the old key and cert, a pair, and no temp files', async (t) => {
    const certDir = smallTmpfs(t, 'sia-certfs-', async () => {})
    if (!certDir) return
    const cfg = config({ CERT_FILE: join(certDir, 'cert.pem') })
    const refresher = createIdentityRefresher({
      config: cfg,
      log,
      provider: createLocalCertProvider(cfg.dataDir, pool, cfg.refreshInterval),
      pool,
    })
    await refreshAll(refresher)
    const old = [readFileSync(cfg.keyFile, 'utf8'), readFileSync(cfg.certFile, 'utf8')] as const
    assert.ok(pairs(...old))
    assert.equal(fillDisk(certDir), 'ENOSPC')
    await assert.rejects(refreshAll(refresher), { code: 'ENOSPC' })
    const now = [readFileSync(cfg.keyFile, 'utf8'), readFileSync(cfg.certFile, 'utf8')]
    assert.deepEqual(now, old, 'neither file replaced: the key is not new beside the old cert')
    const temps = [dirname(cfg.keyFile), certDir].flatMap((d) =>
      readdirSync(d).filter((f) => f.endsWith('.tmp')),
    )
    assert.deepEqual(temps, [])
  })

  it('names role certificate files with the configured delimiter', () => {
    const cfg = config({ ROLE_CERT_FILENAME_DELIMITER: '_', ROLECERT_DIR: '/r' })
    assert.equal(roleCertPath(cfg, { domain: 'a.b', role: 'c' }), '/r/a.b_c.cert.pem')
    assert.equal(roleCertPath(cfg, { domain: 'a.b', role: 'c' }, 'key'), '/r/a.b_c.key.pem')
  })

  it('backs off 5s, doubling, capped at a quarter of the interval', () => {
    const none = () => 1
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, 5_000, 60_000, none)),
      [5_000, 10_000, 20_000, 40_000, 60_000, 60_000],
    )
    assert.equal(backoffDelay(0, 5_000, 500, none), 500)
    assert.ok(backoffDelay(3, 5_000, 60_000, () => 0) >= 30_000) // jitter only shortens, by at most 25%
  })

  it("a failed refresh's back-off stays within the certificate served: half of what is left, a minute apart once ended", () => {
    const HOUR = 3_600_000
    const sixHours = backoffDelay(20, 5_000, 6 * HOUR, () => 1)
    assert.equal(capToEnd(sixHours, 2 * HOUR, 5_000, 60_000), HOUR)
    assert.equal(capToEnd(sixHours, 4_000, 5_000, 60_000), 5_000, 'never under the first back-off')
    assert.equal(capToEnd(sixHours, 0, 5_000, 60_000), 60_000, 'ended: a minute apart')
    assert.equal(capToEnd(sixHours, -HOUR, 5_000, 60_000), 60_000)
    assert.equal(capToEnd(10_000, 2 * HOUR, 5_000, 60_000), 10_000, 'a short back-off as it is')
  })
})
