import type { Config } from '../config/types.js'
import { readFile } from '../fs-async.js'
import type { Logger } from '../logger.js'
import type { CertProvider } from './cert-provider.js'
import { type CsrPool, createCsrPool } from './csr-pool.js'
import { createIdentityRefresher, type Exclusive, type Identity, type IdentityRefresher } from './identity.js'
import { createLocalCertProvider } from './local-cert-provider.js'
import { createLocalTokenSource } from './local-token-source.js'
import { type ProviderKind, providerKind } from './provider.js'
import type { TokenSource } from './tokens.js'
import { createZtsCertProvider, createZtsRoleCertProvider } from './zts-cert-provider.js'
import { createZtsClient, type ZtsClient } from './zts-client.js'
import { createZtsTokenSource } from './zts-token-source.js'

/** The certificate side of a provider: what the certificate service and MODE=init both run. */
export interface CertRuntime {
  kind: ProviderKind
  provider: CertProvider
  refresher: IdentityRefresher
  pool: CsrPool
  client: ZtsClient | undefined
  close(): Promise<void>
}

export async function ztsClientFor(config: Config): Promise<ZtsClient> {
  const serverCaPem = config.serverCaCert ? await readFile(config.serverCaCert, 'utf8') : ''
  return createZtsClient({ endpoint: config.endpoint, serverCaPem })
}

export async function createCertRuntime(
  config: Config,
  log: Logger,
  hooks: {
    onIssued?: (stored: Identity) => void
    beforeWrite?: () => Promise<void>
    exclusive?: Exclusive
  } = {},
): Promise<CertRuntime> {
  const kind = providerKind(config)
  const pool = createCsrPool()
  const client = kind === 'local' ? undefined : await ztsClientFor(config)
  const provider =
    kind === 'local'
      ? createLocalCertProvider(config.dataDir, pool, config.refreshInterval, log)
      : kind === 'zts'
        ? createZtsCertProvider(config, client!, log)
        : createZtsRoleCertProvider(client!)
  return {
    kind,
    provider,
    pool,
    client,
    refresher: createIdentityRefresher({ config, log, provider, pool, ...hooks }),
    async close() {
      client?.close()
      await pool.close()
    },
  }
}

export function tokenSourceFor(config: Config, client: ZtsClient | undefined): TokenSource {
  const defaultExpirySec = Math.floor(config.tokenExpiry / 1000)
  if (!client) {
    return createLocalTokenSource({
      dataDir: config.dataDir,
      principal: `${config.athenzDomain}.${config.serviceAccount}`,
      defaultExpirySec,
    })
  }
  return createZtsTokenSource(client, defaultExpirySec)
}

export { tokenFilePath, tokenTemplate } from './naming.js'
