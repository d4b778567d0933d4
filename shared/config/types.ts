import type { ServiceName } from '../services.js'
import type { SETTINGS, SettingKey } from './settings.js'

interface KindTypes {
  string: string
  path: string
  duration: number
  interval: number
  int: number
  bool: boolean
  address: string
  list: string[]
}

/** Top-level settings after parsing; durations are in milliseconds. */
export type Settings = { [K in SettingKey]: KindTypes[(typeof SETTINGS)[K]['kind']] }

export type RestartPolicy = 'permanent' | 'transient' | 'temporary'

export interface ResourceLimits {
  maxOldGenerationSizeMb?: number
  maxYoungGenerationSizeMb?: number
  stackSizeMb?: number
}

export interface ServiceTuning {
  enabled: boolean
  startTimeout: number
  shutdownTimeout: number
  resourceLimits: ResourceLimits
  restart: RestartPolicy
  maxRestarts: number
  restartWindow: number
  /** First delay before a restart; doubles per attempt (with jitter) up to restartBackoffMax. */
  restartBackoff: number
  restartBackoffMax: number
  watchdogTimeout: number
  recycleAtPercent: number
}

export interface Config extends Settings {
  services: Record<ServiceName, ServiceTuning>
  /** Every path of a comma-separated KEY_FILE (`keyFile` is the first, the one read). */
  keyFiles: string[]
  /** Every path of a comma-separated CERT_FILE (`certFile` is the first, the one read). */
  certFiles: string[]
}
