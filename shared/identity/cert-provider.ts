import type { Target } from './targets.js'

type Identity = { keyPem: string; certPem: string; caPem: string }

/** Where certificates come from (DESIGN.md §6): the local authority or Athenz ZTS. */
export interface CertProvider {
  readonly name: string
  /** Issues the service (instance) certificate for `csrPem`; register or refresh is the provider's call. */
  instance(csrPem: string, signal: AbortSignal): Promise<{ certPem: string; caPem: string }>
  roleCert(csrPem: string, target: Target, signal: AbortSignal): Promise<string>
  /**
   * The identity that later calls authenticate with (mutual TLS to ZTS); returns the one it
   * replaces, so that a refresh refused after it can put that back.
   */
  useIdentity?(identity: Identity | undefined): Identity | undefined
  /** The certificates of the CA bundle `name` (INTERMEDIATE_CERT_BUNDLE), as PEM. */
  caBundle?(name: string, signal: AbortSignal): Promise<string>
  /** On shutdown with DELETE_INSTANCE_ID. */
  deleteInstance?(signal: AbortSignal): Promise<void>
}
