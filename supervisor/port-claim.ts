import { createServer } from 'node:net'
import { codedError } from '../shared/errors.js'

/**
 * A port this process serves on, claimed against any other sia-supervisor in the same network
 * namespace. Every listener asks for SO_REUSEPORT (DESIGN.md §8), which the kernel grants to any
 * socket of the same user that asks too: a second sidecar started on the same ports would share
 * them silently, each getting a part of the connections. The claim is a Linux abstract socket
 * named for the port: abstract names live per network namespace, as ports do, binding one is
 * exclusive, and the kernel drops it with the process however that ends (SIGKILL included).
 *
 * Resolves with the claim's release once held; rejects with ERR_PORT_IN_USE, naming `setting`, when
 * another sidecar holds it. Abstract sockets are Linux's: elsewhere there is nothing to claim.
 */
export function claimPort(port: number, setting: string): Promise<() => void> {
  if (process.platform !== 'linux') return Promise.resolve(() => {})
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.destroy())
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'EADDRINUSE'
          ? codedError(
              'ERR_PORT_IN_USE',
              `${setting}: port ${port} is served by another sia-supervisor in this network namespace`,
            )
          : codedError('ERR_PORT_CLAIM', `${setting}: cannot claim port ${port}: ${err.message}`, err),
      )
    })
    server.listen({ path: `\0sia-supervisor/tcp/${port}` }, () => {
      // A claim never keeps the process up.
      server.unref()
      resolve(() => server.close())
    })
  })
}
