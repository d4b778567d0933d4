import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseAddress } from './address.js'
import type { TaskBody } from './task-group.js'

/** Resolves once the server is listening: no polling, no cancellation half-way. */
export function listen(server: Server, address: string): Promise<AddressInfo> {
  const { host, port } = parseAddress(address)
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err)
    server.once('error', onError)
    server.listen({ host, port }, () => {
      server.off('error', onError)
      resolve(server.address() as AddressInfo)
    })
  })
}

const IDLE_SWEEP_MS = 25

/**
 * Graceful close: stop accepting, let in-flight requests finish (closing each keep-alive
 * connection as soon as it goes idle), and at `deadline` destroy what is left.
 * Resolves true when it had to destroy connections.
 */
export async function drain(server: Server, deadline: number): Promise<boolean> {
  if (!server.listening) return false
  const closed = new Promise<void>((resolve) => server.close(() => resolve()))
  let finished = false
  void closed.then(() => {
    finished = true
  })
  // server.close() closes the connections idle right now; ones that finish a request later
  // go idle afterwards, so sweep until the server has closed or the deadline has passed.
  while (!finished && Date.now() < deadline) {
    server.closeIdleConnections()
    await Promise.race([closed, sleep(Math.min(IDLE_SWEEP_MS, Math.max(0, deadline - Date.now())))])
  }
  if (finished) return false
  server.closeAllConnections()
  await closed
  return true
}

/** A task that serves until shutdown, then drains: the `server` task of every HTTP service. */
export function serveTask(
  server: Server,
  address: string,
  onListening: (info: AddressInfo) => void,
): TaskBody {
  return async (t) => {
    onListening(await listen(server, address))
    t.ready()
    if (!t.signal.aborted) await new Promise((r) => t.signal.addEventListener('abort', r, { once: true }))
    return (await drain(server, t.deadline())) ? 'timed-out' : undefined
  }
}
