import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Problem } from './problem.js'

/** What Node answers a request it could not parse, or that missed its read deadline. */
const STATUS: Record<string, Problem> = {
  HPE_HEADER_OVERFLOW: { status: 431, title: 'Request Header Fields Too Large' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, title: 'Payload Too Large' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, title: 'Request Timeout' },
}
const BAD_REQUEST: Problem = { status: 400, title: 'Bad Request' }

/** The answer a connection is sending, and the request it answers. */
type Pending = {
  headersSent: boolean
  req?: { complete: boolean }
  once(event: 'finish', fn: () => void): void
}

/**
 * Node's own answers to a malformed request (bad framing, an invalid header, headers too large)
 * or one past its read deadline are bare status lines; these are the same statuses, as problem
 * bodies like every other 4xx here. The connection is then closed (it cannot be parsed further).
 * A request before it on the same connection (pipelined) still being answered is answered first:
 * written at once (as Node's default writes its own), the 400 was the answer the client read for
 * that request: a webhook stored, answered 400, which AlertManager does not retry.
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
    if (err.code === 'ECONNRESET') return void socket.destroy()
    const answer = () => {
      const pending = (socket as Socket & { _httpMessage?: Pending })._httpMessage
      // A whole request before the failing one, still being answered: its answer goes first.
      // (An incomplete one is the failing request itself: one past its read deadline.)
      if (pending?.req?.complete) return void pending.once('finish', answer)
      if (!socket.writable || pending?.headersSent) return void socket.destroy()
      writeProblem(socket, err)
    }
    answer()
  })
}

function writeProblem(socket: Socket, err: Error & { code?: string }): void {
  endWithProblem(socket, { ...(STATUS[err.code ?? ''] ?? BAD_REQUEST), detail: reason(err) })
}

/** A problem answer written on a connection no parser will read again, which it then closes. */
export function endWithProblem(socket: Duplex, problem: Problem): void {
  const body = JSON.stringify({ type: 'about:blank', ...problem })
  socket.end(
    `HTTP/1.1 ${problem.status} ${problem.title}\r\ncontent-type: application/problem+json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  )
  // Whatever the client sends next is not read; the socket goes once the answer is out, or
  // at the latest a moment later (a client that never reads).
  setTimeout(() => socket.destroy(), 500).unref()
}

/** Node's parser errors name what was wrong (`Invalid header value char`): safe to tell. */
function reason(err: Error & { code?: string }): string {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'the request did not arrive within its deadline'
  return err.message.replace(/^Parse Error: /, '')
}
