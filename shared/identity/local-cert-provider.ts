import type { CertProvider } from './cert-provider.js'
import type { CsrPool } from './csr-pool.js'
import { loadOrCreateAuthority } from './local-authority.js'

/** The embedded authority signs on the CSR pool; certificates live twice the refresh interval. */
export function createLocalCertProvider(
  dataDir: string,
  pool: CsrPool,
  refreshIntervalMs: number,
): CertProvider {
  const validityMs = Math.max(2 * refreshIntervalMs, 3600_000)
  const sign = async (csrPem: string) => {
    const ca = await loadOrCreateAuthority(dataDir, pool)
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
