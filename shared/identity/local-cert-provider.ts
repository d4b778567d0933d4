import type { Logger } from '../logger.js'
import type { CertProvider } from './cert-provider.js'
import type { CsrPool } from './csr-pool.js'
import { authorityPaths, loadOrCreateAuthority } from './local-authority.js'

/** The embedded authority signs on the CSR pool; certificates live twice the refresh interval. */
export function createLocalCertProvider(
  dataDir: string,
  pool: CsrPool,
  refreshIntervalMs: number,
  log?: Logger,
): CertProvider {
  const validityMs = Math.max(2 * refreshIntervalMs, 3600_000)
  let signedWith: string | undefined
  const sign = async (csrPem: string) => {
    const ca = await loadOrCreateAuthority(dataDir, pool)
    // Deleted, broken (set aside) or replaced on disk since the last issue: what was issued before
    // no longer verifies against the CA file, and clients that trust the old one refuse the new.
    if (signedWith !== undefined && signedWith !== ca.certPem) {
      log?.warn(
        { event: 'certificate.authority.changed', dir: authorityPaths(dataDir).dir },
        'the local authority on disk is not the one that issued the last certificate: issuing from it now',
      )
    }
    signedWith = ca.certPem
    const caKeyPem = ca.key.export({ type: 'pkcs8', format: 'pem' }).toString()
    return {
      certPem: await pool.sign({ caKeyPem, caCertPem: ca.certPem, csrPem, validityMs }),
      caPem: ca.certPem,
    }
  }
  return {
    name: 'local',
    instance: sign,
    roleCert: async (csrPem) => (await sign(csrPem)).certPem,
  }
}
