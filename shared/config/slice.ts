import type { ServiceName } from '../services.js'
import { SETTINGS, type SettingKey, type SettingSpec } from './settings.js'
import type { Config } from './types.js'

/**
 * Settings that only some workers may hold (DESIGN.md §8, least privilege): every secret, and the
 * paths to key material. A worker's copy of the configuration has the others blanked, so a heap
 * snapshot or a compromise of one worker does not hand over another service's credentials. Every
 * setting marked `secret` must be listed here (a test holds it to that).
 */
export const ONLY_FOR: Partial<Record<SettingKey, readonly ServiceName[]>> = {
  redisUrl: ['gateway'],
  redisSentinelPassword: ['gateway'],
  gatewayAuthToken: ['gateway'],
  gatewayKubeTokenFile: ['gateway'],
  keyFile: ['certificate', 'token'],
  roleCertKeyNamingFormat: ['certificate'],
  saTokenFile: ['certificate'],
  backupKubeTokenFile: ['certificate'],
  tokenServerTlsKeyPath: ['token'],
}

/** The configuration `service`'s worker receives. */
export function configFor(service: ServiceName, config: Config): Config {
  const slice: Record<string, unknown> = { ...config }
  for (const [key, services] of Object.entries(ONLY_FOR)) {
    if (!services.includes(service)) slice[key] = ''
  }
  // Every path of a comma-separated KEY_FILE goes with KEY_FILE.
  if (slice.keyFile === '') slice.keyFiles = []
  return slice as unknown as Config
}

/** Settings marked secret that ONLY_FOR forgot: must be empty. */
export function unslicedSecrets(): SettingKey[] {
  return (Object.keys(SETTINGS) as SettingKey[]).filter(
    (k) => (SETTINGS[k] as SettingSpec).secret && ONLY_FOR[k] === undefined,
  )
}
