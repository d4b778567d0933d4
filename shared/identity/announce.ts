import { BroadcastChannel } from 'node:worker_threads'
import type { Identity } from './identity.js'

/**
 * Each new service identity, announced in-process from the certificate service to whoever needs
 * it (the token service's mutual TLS to ZTS) without re-reading files. A BroadcastChannel reaches
 * every thread of the process and needs no wiring in the supervisor. The identity current at a
 * subscriber's start comes from the certificate service's port (`identity()`), not from here.
 */
const CHANNEL = 'sia-supervisor.identity'

export interface IdentityPublisher {
  publish(identity: Identity): void
  close(): void
}

export function createIdentityPublisher(): IdentityPublisher {
  const channel = new BroadcastChannel(CHANNEL)
  channel.unref()
  return {
    publish: (identity) => channel.postMessage(identity),
    close: () => channel.close(),
  }
}

export function subscribeIdentity(onIdentity: (identity: Identity) => void): { close(): void } {
  const channel = new BroadcastChannel(CHANNEL)
  channel.unref()
  channel.onmessage = (e) => onIdentity((e as { data: Identity }).data)
  return { close: () => channel.close() }
}
