import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { refuseHostless, refuseTransferCoding } from './expectations.js'
import { sendProblem } from './problem.js'
import { closeUnread } from './unread-body.js'

/** Requests a connection may have waiting behind an answer not yet sent: no client we serve pipelines. */
export const MAX_PIPELINED = 16

/**
 * The server's connections, and the request each one is answering. A connection whose request is
 * whole (headers and body received) holds work; any other (idle keep-alive, headers half sent, a
 * body still trickling in) holds none, and a slow client must not hold a shutdown.
 */
export interface ConnectionTracker {
  /** Destroys every connection that has not delivered a whole request. */
  shedIncomplete(): void
  /**
   * Whether some connection's answer is complete but not yet all sent (a slow reader of a large
   * answer): Node's idle sweep counts that connection idle, and would cut the answer.
   */
  flushing(): boolean
  /** Whether some connection holds work: a whole request whose answer is not yet all sent. */
  holdingWork(): boolean
  /**
   * From now on every answer not yet begun says `connection: close` and closes its connection
   * (the drain): answered keep-alive, a client sent its next request on a connection the drain's
   * sweep was closing, and got a reset for a request nobody read.
   */
  closeAfterAnswers(): void
}

type RequestListener = (req: IncomingMessage, res: ServerResponse) => void

/**
 * One request too many behind answers not yet sent: 503, its handler not run, and the connection
 * closed after it (the client sends the rest again on a new one, as it must any request a closed
 * connection left unanswered). The answers before it are sent first, in order.
 */
function refusePipelined(req: IncomingMessage, res: ServerResponse, max: number): void {
  closeUnread(req, res)
  sendProblem(
    res,
    {
      status: 503,
      title: 'Service Unavailable',
      detail: `more than ${max} requests waiting on one connection: send the rest on a new one`,
    },
    { connection: 'close', 'retry-after': '0' },
  )
}

/** What a server admits: requests waiting a connection, connections at once. */
export interface ConnectionLimits {
  /** Requests a connection may have waiting behind an answer not yet sent (MAX_PIPELINED). */
  maxPipelined?: number
  /** Connections held at once (0 or absent: no limit). */
  maxConnections?: number
  /** A connection past `maxConnections`: an older one holding no work was closed for it, or it was. */
  onFull?(evicted: boolean): void
  /**
   * Whether the process is on its way out (SHUTDOWN_DELAY, before this server drains), for a
   * server reached through a Service: its answers say `connection: close` as the drain's do.
   * Readiness has dropped and the pod is leaving the Service's endpoints, but a keep-alive
   * connection stays pinned to it; closed after each answer, the client's next request opens a
   * new one through the Service, to a pod that stays.
   */
  leaving?(): boolean
}

/**
 * Tracks each connection's last request, and bounds how many it may have in flight. Node hands a
 * handler every request its parser finds in what it has read, answers queued in order: one write
 * of 2,000 pipelined `GET /metrics` (68 KB) started 2,000 scrapes at once and ended the metrics
 * thread out of heap, and six of them the sidecar (crash loop). A request that arrives while
 * `maxPipelined` answers on its connection are still unsent is answered 503 (refusePipelined),
 * its handler not run, and the connection closed once the answers before it are sent; past twice
 * that (a client that goes on regardless), the connection ends at once: no handler runs for the
 * rest of that read, which Node still parses, and what was queued for it is freed. Call it before
 * any other 'request' listener is added: the server's handler runs behind the check. It costs a
 * request two WeakMap lookups (and, for a server behind a Service, one read of the status board);
 * no listener, no closure made.
 *
 * Past `maxConnections`, the oldest connection running no handler (idle, its request not yet
 * whole: a slowloris; or its answer done but unread) is closed for the new one, which is closed
 * itself only when every other one has a handler running: a flood of slow clients cannot keep a
 * probe or a scrape out, and what a handler is doing is never cut.
 */
export function trackConnections(server: Server, limits: ConnectionLimits = {}): ConnectionTracker {
  const max = limits.maxPipelined ?? MAX_PIPELINED
  const maxConnections = limits.maxConnections || Number.POSITIVE_INFINITY
  const open = new Set<Socket>()
  // The last request each connection delivered headers for. It holds work while its body is
  // whole and its answer not yet flushed.
  const last = new WeakMap<Socket, ServerResponse>()
  // How many requests wait on that connection behind an answer not yet sent.
  const depth = new WeakMap<Socket, number>()
  // For TLS the request's socket is the TLSSocket; `connection` gives the TCP socket under it.
  const raw = (s: Socket) => ((s as Socket & { _parent?: Socket })._parent ?? s) as Socket
  let closing = false
  const leaving = limits.leaving
  // Answers the drain told to close their connection: only a connection's last may, or a request
  // pipelined behind one, read already, would go unanswered.
  const closer = new WeakSet<ServerResponse>()
  const closeAfter = (res: ServerResponse) => {
    res.shouldKeepAlive = false
    closer.add(res)
  }
  // A handler may be running on it: its last request is whole and its answer not yet ended, or
  // requests came behind answers still unsent (pipelined: the last one answered at once, or its
  // body still arriving, while one before it is being handled). Answers go out in order, so while
  // the last is unsent none before it is known to be done.
  const working = (s: Socket) => {
    const res = last.get(s)
    if (res === undefined || res.writableFinished) return false
    return (depth.get(s) ?? 0) > 0 || (res.req.complete && !res.writableEnded)
  }
  server.on('connection', (s: Socket) => {
    open.add(s)
    s.once('close', () => open.delete(s))
    if (open.size <= maxConnections) return
    // The oldest first (a Set keeps its order): the new one, last, is closed only if none is idle.
    for (const o of open) {
      if (o === s || !working(o)) {
        // Out of the count now: its 'close' comes later, and the next connection must not find it.
        open.delete(o)
        o.destroy()
        limits.onFull?.(o !== s)
        return
      }
    }
  })
  const handlers = server.listeners('request') as RequestListener[]
  server.removeAllListeners('request')
  server.on('request', function gate(this: Server, req: IncomingMessage, res: ServerResponse) {
    const socket = raw(req.socket)
    const before = last.get(socket)
    const waiting = before && !before.writableFinished ? (depth.get(socket) ?? 0) + 1 : 0
    if (waiting > 2 * max) {
      req.socket.destroy()
      return
    }
    last.set(socket, res)
    depth.set(socket, waiting)
    if (closing || leaving?.()) {
      if (before && closer.has(before) && !before.headersSent) before.shouldKeepAlive = true
      closeAfter(res)
    }
    if (waiting > max) return refusePipelined(req, res, max)
    if (refuseHostless(req, res) || refuseTransferCoding(req, res)) return
    for (const handler of handlers) handler.call(this, req, res)
  })
  return {
    shedIncomplete() {
      for (const s of open) {
        const res = last.get(s)
        if (!res || res.writableFinished || !res.req.complete) s.destroy()
      }
    },
    flushing() {
      for (const s of open) {
        const res = last.get(s)
        if (res?.writableEnded && !res.writableFinished) return true
      }
      return false
    },
    holdingWork() {
      for (const s of open) {
        const res = last.get(s)
        if (res && !res.writableFinished && res.req.complete) return true
      }
      return false
    },
    closeAfterAnswers() {
      closing = true
      for (const s of open) {
        const res = last.get(s)
        if (res && !res.headersSent) closeAfter(res)
      }
    },
  }
}
