import type { Server } from 'node:http'
import type { Duplex } from 'node:stream'
import { endWithProblem } from './client-error.js'
import { sendProblem } from './problem.js'

/**
 * What Node answers by itself before a handler sees the request, answered as every other 4xx here:
 * - `Expect: 100-continue`: Node sends the 100 at once, inviting a body the handler may then
 *   refuse unread (a 405, a 404). Unless the server decides it itself (`checkContinue`, the
 *   gateway's), the request goes to its handler with no 100: one that reads the body sends it
 *   (`continueIfExpected`), one that answers first closes the connection (unread-body.ts).
 * - any other expectation: 417, a problem body (Node's is a bare status line).
 * - CONNECT: no server here is a proxy: 405, a problem body (Node closed the connection without
 *   a word).
 */
export function answerExpectations(server: Server): void {
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
