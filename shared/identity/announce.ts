import { BroadcastChannel } from 'node:worker_threads'
import type { Identity } from './identity.js'

/**
 * The service identity, announced in-process from the certificate service to whoever needs it
 * (the token service's mutual TLS to ZTS) without re-reading files. A BroadcastChannel reaches
 * every thread of the process and needs no wiring in the supervisor; a late subscriber asks for
 * the current identity and the certificate service answers.
 */
const CHANNEL = 'sia-supervisor.identity'

type Message = { kind: 'identity'; identity: Identity } | { kind: 'request' }

export interface IdentityPublisher {
  publish(identity: Identity): void
  close(): void
}

export function createIdentityPublisher(current: () => Identity | undefined): IdentityPublisher {
  const channel = new BroadcastChannel(CHANNEL)
  channel.unref()
  channel.onmessage = (e) => {
    const id = current()
    if ((e as { data: Message }).data.kind === 'request' && id) {
      channel.postMessage({ kind: 'identity', identity: id } satisfies Message)
    }
  }
  return {
    publish: (identity) => channel.postMessage({ kind: 'identity', identity } satisfies Message),
    close: () => channel.close(),
  }
}

export function subscribeIdentity(onIdentity: (identity: Identity) => void): { close(): void } {
  const channel = new BroadcastChannel(CHANNEL)
  channel.unref()
  channel.onmessage = (e) => {
    const msg = (e as { data: Message }).data
    if (msg.kind === 'identity') onIdentity(msg.identity)
  }
  channel.postMessage({ kind: 'request' } satisfies Message)
  return { close: () => channel.close() }
}
