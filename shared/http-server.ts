import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseAddress } from './address.js'
import { monotonicMs } from './clock.js'
import { heapVitals } from './heap-vitals.js'
import { answerClientErrors } from './http/client-error.js'
import { connectionCap, MAX_HEADER_LINES } from './http/connection-cap.js'
import { type ConnectionTracker, trackConnections } from './http/connections.js'
import { answerExpectations } from './http/expectations.js'
import type { Logger } from './logger.js'
import type { TaskBody } from './task-group.js'

/**
 * Resolves once the server is listening: no polling, no cancellation half-way. With SO_REUSEPORT,
 * so a replacement worker listens on the same address before its predecessor stops (DESIGN.md §8):
 * no connection is refused in between. The kernel shares the port only between sockets of the
 * same user that all ask for it: a port held by anything else still fails with EADDRINUSE.
 */
export function listen(server: Server, address: string): Promise<AddressInfo> {
  const { host, port } = parseAddress(address)
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err)
    server.once('error', onError)
    // Not for port 0: a successor gets a port of its own anyway, and the kernel's choice of an
    // ephemeral port for a SO_REUSEPORT socket may fall on one already in use.
    server.listen({ host, port, reusePort: port !== 0 }, () => {
      server.off('error', onError)
      resolve(server.address() as AddressInfo)
    })
  })
}

const IDLE_SWEEP_MS = 25
/**
 * How long a connection in the middle of sending its request may take, once a drain has begun,
 * to deliver it whole: a client that is sending finishes within milliseconds; a slow or hostile
 * one (a slowloris) does not, and is dropped.
 */
const INCOMPLETE_GRACE_MS = 250

/**
 * What a server may be given: read deadlines (HTTP_HEADER_TIMEOUT, HTTP_REQUEST_TIMEOUT, in ms),
 * connection and body bounds, and what says the process is leaving.
 */
export interface ServerLimits {
  /** The request line and headers must arrive within this long of the connection or request start. */
  headersTimeoutMs: number
  /** The whole request, body included, must arrive within this long; Node answers 408 otherwise. */
  requestTimeoutMs: number
  /**
   * Connections held at once (HTTP_MAX_CONNECTIONS; 0: no limit): past it, Node closes each new
   * one as it is accepted, so one port's flood cannot take every descriptor of the process.
   */
  maxConnections?: number
  /** What a handler reads into memory of a request's body at most (0: none, or under a budget of its own). */
  heldBodyBytes?: number
  /**
   * Whether the process is shutting down, for a server behind a Service: its answers close their
   * connections (connections.ts).
   */
  leaving?(): boolean
}

/** How often, at most, a server says it is closing connections at its limit. */
const FULL_LOG_MS = 60_000

/**
 * Applies the read deadlines. Node checks them on a timer (`connectionsCheckingInterval`, 30 s by
 * default), read when the server starts listening: a tenth of the shortest deadline, between
 * 100 ms and 1 s, so a client past its deadline gets its 408 at most that much later.
 */
export function applyReadDeadlines(server: Server, d: ServerLimits): void {
  server.headersTimeout = d.headersTimeoutMs
  server.requestTimeout = d.requestTimeoutMs
  const shortest = Math.min(d.headersTimeoutMs, d.requestTimeoutMs)
  // Public since Node 18.12 (a createServer option, read at listen), not in @types/node.
  const s = server as Server & { connectionsCheckingInterval: number }
  s.connectionsCheckingInterval = Math.max(100, Math.min(1000, Math.floor(shortest / 10)))
}

/**
 * Graceful close: stop accepting, close idle connections, drop those that have not delivered a
 * whole request within a short grace, let in-flight requests finish (closing each connection as
 * soon as it no longer holds one), and at `deadline` (shared/clock.ts) destroy what is left.
 * Resolves true when what it destroyed held work (an idle connection cut at a deadline already
 * past is no work lost: an idle service given little time stops clean).
 */
export async function drain(server: Server, deadline: number, conns: ConnectionTracker): Promise<boolean> {
  if (!server.listening) return false
  // net's close(), not http's: http's first closes every connection Node counts idle, and Node
  // counts one idle until its parser has begun a request, so one accepted in the instant before
  // (a probe's, a client's, its request unread or still in flight) would be reset unanswered.
  // Stopping to accept is all this step does; the sweeps below close the idle ones. (http's close
  // would also stop its unref'd timer of read deadlines, which now ends with the thread.) net is
  // taken here, where a server exists, so that the threads that never serve do not load it.
  const { Server: NetServer } = process.getBuiltinModule('node:net')
  const closed = new Promise<void>((resolve) => NetServer.prototype.close.call(server, () => resolve()))
  conns.closeAfterAnswers()
  let finished = false
  void closed.then(() => {
    finished = true
  })
  // A connection that finishes its answer may start sending another request: sweep until the
  // server has closed or the deadline has passed. Each sweep comes after a wait, the first one
  // too, so that a connection accepted just before has had its request read, and is not idle.
  const graceEnds = monotonicMs() + INCOMPLETE_GRACE_MS
  while (!finished && monotonicMs() < deadline) {
    await Promise.race([closed, sleep(Math.min(IDLE_SWEEP_MS, Math.max(0, deadline - monotonicMs())))])
    if (finished) break
    // Node counts a connection idle once its answer has ended, sent or not: while one is still
    // being sent, the sweep waits (a slow reader cut was an answer lost, and the drain said clean).
    if (!conns.flushing()) server.closeIdleConnections()
    if (monotonicMs() >= graceEnds) conns.shedIncomplete()
  }
  if (finished) return false
  const cut = conns.holdingWork()
  server.closeAllConnections()
  await closed
  return cut
}

/** A task that serves until shutdown, then drains: the `server` task of every HTTP service. */
export function serveTask(
  server: Server,
  address: string,
  onListening: (info: AddressInfo, maxConnections: number) => void,
  limits?: ServerLimits,
  log?: Logger,
): TaskBody {
  return async (t) => {
    const maxConnections = connectionCap(
      limits?.maxConnections ?? 0,
      limits?.heldBodyBytes ?? 0,
      heapVitals().limitBytes,
    )
    // First: it takes the handler behind its check.
    const conns = trackConnections(server, {
      maxConnections,
      onFull: fullLog(maxConnections, log),
      leaving: limits?.leaving,
    })
    server.maxHeadersCount = MAX_HEADER_LINES
    // A client may end its side once its request is sent (RFC 9112 §9.6): Node's default ends the
    // connection at that FIN, and an answer not ready by then (a scrape, a stored webhook) was lost.
    // Half-open, Node sends the answers under way and then closes (the http server's own switch,
    // set false by its constructor since Node 0.x; not in @types/node).
    ;(server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true
    if (limits) applyReadDeadlines(server, limits)
    answerClientErrors(server)
    answerExpectations(server)
    onListening(await listen(server, address), maxConnections)
    t.ready()
    if (!t.signal.aborted) await new Promise((r) => t.signal.addEventListener('abort', r, { once: true }))
    return (await drain(server, t.deadline(), conns)) ? 'timed-out' : undefined
  }
}

/**
 * Past the cap (connection-cap.ts): said once a minute, with how many connections were closed
 * for new ones (`evicted`) and how many new ones were closed (`dropped`).
 */
function fullLog(max: number, log: Logger | undefined): (evicted: boolean) => void {
  let evicted = 0
  let dropped = 0
  let saidAt = Number.NEGATIVE_INFINITY
  return (closedOld) => {
    if (closedOld) evicted++
    else dropped++
    if (monotonicMs() - saidAt < FULL_LOG_MS) return
    saidAt = monotonicMs()
    log?.warn(
      { event: 'server.connections.full', maxConnections: max, evicted, dropped },
      `${max} connections held: closing the oldest idle or slow one for each new one (HTTP_MAX_CONNECTIONS, heap)`,
    )
  }
}
