import { connect } from 'node:net'

/**
 * Sends `head` (a request line and header lines, each ending in CRLF) with a chunked body of
 * `total` bytes that never ends, one chunk per turn of the loop until the server answers, and
 * returns the answer once the server closes the connection. A server that stops reading stalls
 * the sender long before `total` (loopback buffers hold far less); one that reads and discards
 * the body takes all of it, then holds the connection to its read deadline.
 */
export function sendUnterminated(
  url: string,
  total: number,
  head: string,
): Promise<{ head: string; body: string; sent: number }> {
  const { port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1')
    let answer = ''
    let sent = 0
    const chunk = Buffer.alloc(64 * 1024, 'x')
    socket.on('error', () => {}) // EPIPE/ECONNRESET once the server closes: expected
    socket.on('data', (d) => {
      answer += d.toString()
    })
    socket.on('close', () => {
      const [head = '', body = ''] = answer.split('\r\n\r\n')
      if (!head) return reject(new Error('connection closed without an answer'))
      resolve({ head, body, sent })
    })
    socket.on('connect', () => {
      socket.write(`${head}transfer-encoding: chunked\r\n\r\n`)
      // One chunk per turn of the event loop, as a client that reads while it sends.
      const pump = () => {
        if (sent >= total || answer || socket.destroyed || !socket.writable) return
        sent += chunk.length
        if (socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`)) setImmediate(pump)
        else socket.once('drain', pump)
        // Never the terminating chunk: only a server that stops at its limit can answer.
      }
      pump()
    })
  })
}
