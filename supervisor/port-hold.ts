import { connect, createServer, type Socket } from 'node:net'
import { parseAddress } from '../shared/address.js'
import { codedError } from '../shared/errors.js'

/**
 * The supervisor's stand-in on a service's port between a worker's death and its successor's
 * start (DESIGN.md §8): it listens on the same address (SO_REUSEPORT, as every worker does),
 * accepts and parks connections, and hands each to the successor once it serves: a byte-for-byte
 * relay to the port, which by then only the successor holds. A client sees a slower first answer,
 * never a refused connection.
 *
 * A parked connection is read ahead, up to a bound (then paused): a client that leaves is seen and
 * let go (paused unread, it kept its place until the release, and a new client was reset once
 * those filled the bound), and what it sent goes to the successor with the connection, so that
 * the successor's idle-connection eviction does not take a request already made. Half-closed
 * connections stay open for their answer (a client that sends its request and shuts its side).
 */
export interface PortHold {
  /** Connections parked now. */
  held(): number
  /** Stops listening; relays each parked connection to the service's port. */
  release(): void
  /** Stops listening; resets each parked connection (no successor is coming soon). */
  drop(): void
}

export interface HoldOptions {
  /**
   * Parked connections beyond this are reset: the successor's own cap (HTTP_MAX_CONNECTIONS, an
   * eighth of the open-file limit by default), so that the hold takes no more descriptors than
   * the worker it stands for, and the successor does not evict what it is handed.
   */
  maxConnections: number
}

/** The most the hold parks whatever the service's cap (0: none). */
export const MAX_HELD_CONNECTIONS = 1024
/** What a parked connection is read ahead before it is paused. */
const READ_AHEAD_BYTES = 64 * 1024

interface Parked {
  socket: Socket
  sent: Buffer[]
  bytes: number
  /** The client shut its side after `sent` (a half-close): the relay ends upstream's too. */
  ended: boolean
}

/** Resolves once listening; rejects (ERR_PORT_HOLD) when the address cannot be shared. */
export function holdPort(address: string, opts: HoldOptions): Promise<PortHold> {
  const { host, port } = parseAddress(address)
  const cap = Math.min(MAX_HELD_CONNECTIONS, opts.maxConnections || MAX_HELD_CONNECTIONS)
  const parked = new Map<Socket, Parked>()
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    if (parked.size >= cap) return void socket.resetAndDestroy()
    const p: Parked = { socket, sent: [], bytes: 0, ended: false }
    parked.set(socket, p)
    socket.on('error', () => {})
    socket.once('close', () => parked.delete(socket))
    socket.on('data', (chunk: Buffer) => {
      p.sent.push(chunk)
      p.bytes += chunk.length
      if (p.bytes >= READ_AHEAD_BYTES) socket.pause()
    })
    socket.once('end', () => {
      // Gone before it asked anything: nothing to hand over.
      if (p.bytes === 0) return void socket.destroy()
      p.ended = true
    })
  })
  const stop = (): Parked[] => {
    server.close()
    const all = [...parked.values()]
    parked.clear()
    return all
  }
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(codedError('ERR_PORT_HOLD', `cannot hold ${address}: ${err.message}`, err)),
    )
    server.listen({ host, port, reusePort: true }, () => {
      // An accept error once listening (EMFILE) costs that connection, not the supervisor.
      server.on('error', () => {})
      resolve({
        held: () => parked.size,
        release: () => {
          for (const p of stop()) relay(p, dialHost(host), port)
        },
        drop: () => {
          for (const p of stop()) p.socket.resetAndDestroy()
        },
      })
    })
  })
}

/** Where to reach a server listening on `host`: a wildcard means this machine. */
function dialHost(host: string | undefined): string {
  if (host === undefined || host === '0.0.0.0') return '127.0.0.1'
  if (host === '::') return '::1'
  return host
}

/**
 * How long a relayed connection stays once the successor has ended its side (its last answer
 * passed on to the client, and the end with it): time for the client to read it and close.
 * Then both sockets are destroyed: a client that never closed its side kept the pair, two
 * descriptors on the main thread, for as long as it lived.
 */
export const RELAY_LINGER_MS = 2000

function relay({ socket: client, sent, ended }: Parked, host: string, port: number): void {
  // Parked no more: what comes now is piped (an end now is the relay's, not a client gone).
  client.removeAllListeners('data')
  client.removeAllListeners('end')
  client.pause()
  const upstream = connect({ host, port, allowHalfOpen: true })
  let linger: NodeJS.Timeout | undefined
  const end = () => {
    clearTimeout(linger)
    client.destroy()
    upstream.destroy()
  }
  client.on('error', end)
  upstream.on('error', end)
  client.once('close', end)
  upstream.once('end', () => {
    linger = setTimeout(end, RELAY_LINGER_MS).unref()
  })
  // Sent with the connection (queued until it is made): the request is there as it arrives.
  for (const chunk of sent) upstream.write(chunk)
  if (ended) upstream.end()
  upstream.once('connect', () => {
    if (!ended) client.pipe(upstream)
    upstream.pipe(client)
  })
}
