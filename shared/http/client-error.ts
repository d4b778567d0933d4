import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Problem } from './problem.js'

/** What Node answers a request it could not parse, or that missed its read deadline. */
const STATUS: Record<string, Problem> = {
  HPE_HEADER_OVERFLOW: { status: 431, title: 'Request Header Fields Too Large' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, title: 'Payload Too Large' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, title: 'Request Timeout' },
}
const BAD_REQUEST: Problem = { status: 400, title: 'Bad Request' }

/**
 * Node's own answers to a malformed request (bad framing, an invalid header, headers too large)
 * or one past its read deadline are bare status lines; these are the same statuses, as problem
 * bodies like every other 4xx here. As Node's default: only when no answer has begun on the
 * connection, which is then closed (it cannot be parsed further).
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
    const busy = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
    if (err.code === 'ECONNRESET' || !socket.writable || busy?.headersSent) return void socket.destroy()
    const problem = { ...(STATUS[err.code ?? ''] ?? BAD_REQUEST), detail: reason(err) }
    const body = JSON.stringify({ type: 'about:blank', ...problem })
    socket.end(
      `HTTP/1.1 ${problem.status} ${problem.title}\r\ncontent-type: application/problem+json\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    )
    // Whatever the client sends next is not read; the socket goes once the answer is out, or
    // at the latest a moment later (a client that never reads).
    setTimeout(() => socket.destroy(), 500).unref()
  })
}

/** Node's parser errors name what was wrong (`Invalid header value char`): safe to tell. */
function reason(err: Error & { code?: string }): string {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'the request did not arrive within its deadline'
  return err.message.replace(/^Parse Error: /, '')
}
