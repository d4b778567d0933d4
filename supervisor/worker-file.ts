import type { ServiceName } from '../shared/services.js'

/**
 * The file a service's worker runs: its bundle, one CommonJS file (scripts/bundle.mjs). A path
 * from this folder, which is also that of the supervisor's bundle.
 */
export function workerFile(service: ServiceName): URL {
  return new URL(`../workers/${service}/main.cjs`, import.meta.url)
}
