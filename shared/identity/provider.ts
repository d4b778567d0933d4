import type { Config } from '../config/types.js'

/**
 * DESIGN.md §6: `local` when ENDPOINT is empty; `zts` with ENDPOINT and PROVIDER_SERVICE;
 * `files` with ENDPOINT alone (someone else writes KEY_FILE/CERT_FILE, ZTS issues role certs and tokens).
 */
export type ProviderKind = 'local' | 'files' | 'zts'

export function providerKind(config: Config): ProviderKind {
  if (!config.endpoint) return 'local'
  return config.providerService ? 'zts' : 'files'
}
