import { connect, createServer, type Socket } from 'node:net'
import { parseAddress } from '../shared/address.js'
import { codedError } from '../shared/errors.js'

/**
 * The supervisor's stand-in on a service's port between a worker's death and its successor's
 * start (DESIGN.md §8): it listens on the same address (SO_REUSEPORT, as every worker does),
 * accepts and parks connections without reading them, and hands each to the successor once it
 * serves: a byte-for-byte relay to the port, which by then only the successor holds. A client sees
 * a slower first answer, never a refused connection.
 */
export interface PortHold {
  /** Connections parked so far. */
  held(): number
  /** Stops listening; relays each parked connection to the service's port. */
  release(): void
  /** Stops listening; resets each parked connection (no successor is coming soon). */
  drop(): void
}

/** Parked connections beyond this are reset: the hold costs file descriptors, not memory. */
export const MAX_HELD_CONNECTIONS = 1024

/** Resolves once listening; rejects (ERR_PORT_HOLD) when the address cannot be shared. */
export function holdPort(address: string): Promise<PortHold> {
  const { host, port } = parseAddress(address)
  const parked = new Set<Socket>()
  const server = createServer({ pauseOnConnect: true }, (socket) => {
    if (parked.size >= MAX_HELD_CONNECTIONS) return void socket.resetAndDestroy()
    parked.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => parked.delete(socket))
  })
  const stop = (): Socket[] => {
    server.close()
    const sockets = [...parked]
    parked.clear()
    return sockets
  }
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(codedError('ERR_PORT_HOLD', `cannot hold ${address}: ${err.message}`, err)),
    )
    server.listen({ host, port, reusePort: true }, () =>
      resolve({
        held: () => parked.size,
        release: () => {
          for (const socket of stop()) relay(socket, dialHost(host), port)
        },
        drop: () => {
          for (const socket of stop()) socket.resetAndDestroy()
        },
      }),
    )
  })
}

/** Where to reach a server listening on `host`: a wildcard means this machine. */
function dialHost(host: string | undefined): string {
  if (host === undefined || host === '0.0.0.0') return '127.0.0.1'
  if (host === '::') return '::1'
  return host
}

function relay(client: Socket, host: string, port: number): void {
  const upstream = connect({ host, port })
  const end = () => {
    client.destroy()
    upstream.destroy()
  }
  client.on('error', end)
  upstream.on('error', end)
  upstream.once('connect', () => {
    client.pipe(upstream)
    upstream.pipe(client)
    client.resume()
  })
}
