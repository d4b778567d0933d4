import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

/** Requests a connection may have waiting behind an answer not yet sent: no client we serve pipelines. */
export const MAX_PIPELINED = 16

type RequestListener = (req: IncomingMessage, res: ServerResponse) => void

/**
 * Bounds how many requests one connection may have in flight at once. Node hands a handler every
 * request its parser finds in what it has read, answers queued in order: one write of 2,000
 * pipelined `GET /metrics` (68 KB) started 2,000 scrapes at once and ended the metrics thread out
 * of heap, and six of them the sidecar (crash loop). A request that arrives while `MAX_PIPELINED`
 * answers on its connection are still unsent ends the connection: its handler never runs (nor
 * those of the rest of that read, which Node still parses), and what was queued for it is freed.
 * The listeners the server has when this is called (its handler) run behind the check; it costs a
 * request two WeakMap lookups, no listener and no closure.
 */
export function boundPipelining(server: Server, max = MAX_PIPELINED): void {
  const handlers = server.listeners('request') as RequestListener[]
  server.removeAllListeners('request')
  const last = new WeakMap<Socket, ServerResponse>()
  const depth = new WeakMap<Socket, number>()
  server.on('request', function gate(this: Server, req: IncomingMessage, res: ServerResponse) {
    const socket = req.socket
    const before = last.get(socket)
    const waiting = before && !before.writableFinished ? (depth.get(socket) ?? 0) + 1 : 0
    if (waiting > max) {
      socket.destroy()
      return
    }
    last.set(socket, res)
    depth.set(socket, waiting)
    for (const handler of handlers) handler.call(this, req, res)
  })
}
