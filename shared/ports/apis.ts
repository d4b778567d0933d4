import type { Identity } from '../identity/identity.js'
import type { LastWorkerError, MetricsJson } from '../protocol.js'
import type { ServiceName } from '../services.js'

/** What every worker, and the supervisor, answers: its registry, for the metrics service. */
export interface CollectApi {
  /**
   * `view`: a look (the status page) that starts no new period of since-the-last-scrape series.
   * `answerBy` (shared/clock.ts): past it, the scrape gave up waiting (a blocked loop): answered
   * as a view, so the block it could not see is left for the next scrape to report.
   */
  collect(view?: boolean, answerBy?: number): MetricsJson | Promise<MetricsJson>
}

/** The typed API each service exposes to the others (DESIGN.md §9). */
export interface ServiceApis {
  supervisor: CollectApi & {
    /** How each worker last ended on its own, for the status page. */
    lastErrors(): Partial<Record<ServiceName, LastWorkerError>>
  }
  certificate: CollectApi & {
    /** The current service identity, or undefined before the first one. */
    identity(): Identity | undefined
  }
  token: CollectApi
  'memory-reporter': CollectApi
  gateway: CollectApi
  metrics: CollectApi
  healthcheck: CollectApi
}

export type Target = keyof ServiceApis

/**
 * Who may call what (DESIGN.md §8, no worker holds another service's secrets): the metrics
 * service collects every registry and the supervisor's last errors, the token service reads the
 * identity (its private key with it). Nothing else: a gateway, which serves any HTTP client, that
 * asked the certificate service for the identity was given the key.
 */
export const CALLS: Readonly<
  Partial<Record<ServiceName, Readonly<Partial<Record<Target, readonly string[]>>>>>
> = {
  metrics: {
    supervisor: ['collect', 'lastErrors'],
    certificate: ['collect'],
    token: ['collect'],
    'memory-reporter': ['collect'],
    gateway: ['collect'],
    healthcheck: ['collect'],
  },
  token: { certificate: ['identity'] },
}

/** A service's API as its callers see it: every method returns a promise. */
export type ServiceProxy<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never
}
