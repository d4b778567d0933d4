import type { IncomingMessage, ServerResponse } from 'node:http'

/** As Go's net/http (rstAvoidanceDelay): long enough for the client to read the answer. */
const LINGER_MS = 500

/** Whether the request has a body still to come (declared; it may not have arrived yet). */
export function bodyFollows(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0
}

/**
 * For an answer given without reading the request's whole body: Node would read and discard the
 * rest to keep the connection for a next request, so a client could keep a refused request (a
 * 404, a 401, a 413) streaming until the read deadline. The answer says `connection: close`, and
 * no more of the body is read. Nothing to do for a request whose body has been read, or that has
 * none: the hot paths pay two header lookups.
 */
export function closeUnread(req: IncomingMessage, res: ServerResponse): void {
  if (req.complete || !bodyFollows(req)) return
  if (!res.headersSent) res.setHeader('connection', 'close')
  closeLingering(req)
}

/**
 * Node destroys a `connection: close` socket as soon as the answer is flushed; with request bytes
 * still unread that sends a TCP RST at once, which can wipe the answer before the client reads
 * it. So half-close after the answer and destroy only LINGER_MS later, still without reading
 * another byte.
 */
function closeLingering(req: IncomingMessage): void {
  const socket = req.socket
  socket.destroySoon = () => {
    socket.end()
    const timer = setTimeout(() => socket.destroy(), LINGER_MS)
    socket.once('close', () => clearTimeout(timer))
  }
}
