import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { endWithProblem } from './client-error.js'
import { sendProblem } from './problem.js'
import { closeUnread } from './unread-body.js'

/**
 * What Node answers by itself before a handler sees the request, answered as every other 4xx here:
 * - `Expect: 100-continue`: Node sends the 100 at once, inviting a body the handler may then
 *   refuse unread (a 405, a 404). Unless the server decides it itself (`checkContinue`, the
 *   gateway's), the request goes to its handler with no 100: one that reads the body sends it
 *   (`continueIfExpected`), one that answers first closes the connection (unread-body.ts).
 * - any other expectation: 417, a problem body (Node's is a bare status line).
 * - CONNECT: no server here is a proxy: 405, a problem body (Node closed the connection without
 *   a word).
 * - An HTTP/1.1 request with no Host (RFC 9112 §3.2): 400, a problem body (Node's is a bare
 *   status line, sent before any listener sees the request): the server lets it through and the
 *   per-request gate (connections.ts) refuses it with `refuseHostless`.
 */
export function answerExpectations(server: Server): void {
  // Read by Node at each request (its `requireHostHeader` option), public, not in @types/node 22.
  ;(server as Server & { requireHostHeader: boolean }).requireHostHeader = false
  if (server.listenerCount('checkContinue') === 0) {
    server.on('checkContinue', (req, res) => server.emit('request', req, res))
  }
  server.on('checkExpectation', (_req, res) =>
    sendProblem(
      res,
      { status: 417, title: 'Expectation Failed', detail: 'the only expectation served is 100-continue' },
      { connection: 'close' },
    ),
  )
  server.on('connect', (_req, socket: Duplex) =>
    endWithProblem(socket, { status: 405, title: 'Method Not Allowed', detail: 'CONNECT: this is no proxy' }),
  )
}

/** Before a handler reads a body a client holds back for `100 Continue`: the 100. */
export function continueIfExpected(
  req: { headers: { expect?: string | undefined } },
  res: { writeContinue(): void; headersSent: boolean },
): void {
  if (!res.headersSent && /^100-continue$/i.test(req.headers.expect ?? '')) res.writeContinue()
}

/** An HTTP/1.1 request with no Host gets its 400 here, and true; any other, false. */
export function refuseHostless(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.headers.host !== undefined || req.httpVersionMajor !== 1 || req.httpVersionMinor !== 1) return false
  closeUnread(req, res)
  sendProblem(
    res,
    { status: 400, title: 'Bad Request', detail: 'an HTTP/1.1 request must have a Host header' },
    { connection: 'close' },
  )
  return true
}

/**
 * A request whose body comes in a transfer coding other than chunked alone (`gzip, chunked`):
 * Node takes the chunked framing off and hands the handler the gzip as if it were the body.
 * RFC 9112 §6.1: 501 for a transfer coding the server does not understand.
 */
export function refuseTransferCoding(req: IncomingMessage, res: ServerResponse): boolean {
  const te = req.headers['transfer-encoding']
  if (te === undefined || te.toLowerCase() === 'chunked') return false
  closeUnread(req, res)
  sendProblem(
    res,
    { status: 501, title: 'Not Implemented', detail: `transfer coding "${te}": only chunked is served` },
    { connection: 'close' },
  )
  return true
}
