import type { ServiceName } from '../services.js'
import type { SettingKey } from './settings.js'

/** The setting each service's address comes from: an empty address disables the service (the token service still writes its files, when configured). */
export const ADDRESS_OF: Readonly<Partial<Record<ServiceName, SettingKey>>> = {
  token: 'tokenServerAddr',
  gateway: 'gatewayAddr',
  metrics: 'metricsServerAddr',
  healthcheck: 'healthCheckAddr',
}
