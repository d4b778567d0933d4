import { connect as netConnect, type Socket } from 'node:net'
import { type TLSSocket, connect as tlsConnect } from 'node:tls'

/** The first answer a slow client got, and when (ms after its request began). */
export interface SlowAnswer {
  /** HTTP status of the answer; 0 when the connection closed with no answer. */
  status: number
  afterMs: number
}

export interface SlowClient {
  socket: Socket | TLSSocket
  /** Resolves once the request has begun (the connection is up and its first bytes are written). */
  started: Promise<void>
  /** Resolves when the server answers or closes the connection. */
  answer: Promise<SlowAnswer>
}

export interface SlowOptions {
  port: number
  /** `body`: whole headers, then a chunked body one byte at a time. `headers`: header lines, one at a time. */
  mode: 'body' | 'headers'
  path?: string
  everyMs?: number
  /** Speak TLS (no certificate check: the server's certificate is not what is under test). */
  tls?: boolean
}

/**
 * A slowloris over a real socket: it starts a request and never finishes it, sending a little
 * every `everyMs` so that no idle timeout can be what ends it, only the server's read deadline.
 */
export function slowClient(opts: SlowOptions): SlowClient {
  const path = opts.path ?? '/api/v1/signals/prometheus'
  const everyMs = opts.everyMs ?? 250
  const socket = opts.tls
    ? tlsConnect({ port: opts.port, host: '127.0.0.1', rejectUnauthorized: false })
    : netConnect({ port: opts.port, host: '127.0.0.1' })
  let t0 = 0
  let timer: NodeJS.Timeout | undefined
  let text = ''
  const started = new Promise<void>((resolve, reject) => {
    socket.once(opts.tls ? 'secureConnect' : 'connect', () => {
      t0 = performance.now()
      if (opts.mode === 'body') {
        socket.write(
          `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n`,
        )
        timer = setInterval(() => socket.write('1\r\n \r\n'), everyMs)
      } else {
        socket.write(`POST ${path} HTTP/1.1\r\n`)
        let n = 0
        timer = setInterval(() => socket.write(`X-Slow-${n++}: x\r\n`), everyMs)
      }
      resolve()
    })
    socket.once('error', reject)
  })
  started.catch(() => {})
  const answer = new Promise<SlowAnswer>((resolve) => {
    const done = () => {
      clearInterval(timer)
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text)
      resolve({ status: m ? Number(m[1]) : 0, afterMs: performance.now() - t0 })
    }
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1')
      if (text.includes('\r\n')) {
        done()
        socket.destroy()
      }
    })
    socket.on('error', () => {}) // EPIPE/ECONNRESET once the server has closed: the answer decides
    socket.once('close', done)
  })
  return { socket, started, answer }
}
