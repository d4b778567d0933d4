import type { IncomingMessage, ServerResponse } from 'node:http'
import { readBody } from '../../shared/http/body.js'
import type { BodyBudget } from '../../shared/http/body-budget.js'
import { sendJson, sendProblem } from '../../shared/http/problem.js'
import { bearerChecker } from './auth.js'
import { createIngest, type IngestOptions } from './ingest.js'
import { parseWebhook } from './payload.js'

export const SIGNALS_PATH = '/api/v1/signals/prometheus'
export const READY_PATH = '/ready'
/** Seconds AlertManager (or any client) should wait before retrying a 503. */
const RETRY_AFTER_STORE = '5'
const RETRY_AFTER_BUSY = '1'
/** As Go's net/http (rstAvoidanceDelay): long enough for the client to read the answer. */
const LINGER_MS = 500

export interface HandlerOptions extends IngestOptions {
  maxBodyBytes: number
  maxInflight: number
  /** Body bytes held at once across requests (GATEWAY_MAX_BUFFERED_BYTES). */
  budget: BodyBudget
  authToken: string
  /** Process readiness (the status board), mirrored on /ready. */
  ready(): { ready: boolean; body: unknown }
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void

/** Routes the gateway port: the webhook, /ready, and RFC 7807 answers for everything else. */
export function createHandler(opts: HandlerOptions): Handler {
  const webhook = createWebhookHandler(opts)
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (path === SIGNALS_PATH) {
      if (req.method !== 'POST') return methodNotAllowed(res, 'POST')
      return webhook(req, res)
    }
    if (path === READY_PATH) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(res, 'GET, HEAD')
      const r = opts.ready()
      return sendJson(res, r.ready ? 200 : 503, r.body)
    }
    sendProblem(res, { status: 404, title: 'Not Found', detail: `no route for ${path}` })
  }
}

/**
 * The checks that need no body come first (auth, media type, declared size, load, store), so a
 * rejected request costs nothing. AlertManager retries only 5xx: every condition a retry could
 * fix (store down, overload, sink failure) is a 503, never a 4xx.
 */
function createWebhookHandler(opts: HandlerOptions): Handler {
  const { store, metrics, log } = opts
  const ingest = createIngest(opts)
  const authorized = opts.authToken ? bearerChecker(opts.authToken) : () => true
  let inflight = 0
  const { budget } = opts

  const tooLarge = (req: IncomingMessage, res: ServerResponse) => {
    closeLingering(req)
    sendProblem(
      res,
      { status: 413, title: 'Payload Too Large', detail: `body exceeds ${opts.maxBodyBytes} bytes` },
      { connection: 'close' },
    )
  }
  const unavailable = (
    res: ServerResponse,
    detail: string,
    retryAfter: string,
    extra: Record<string, unknown> = {},
  ) =>
    sendProblem(
      res,
      { status: 503, title: 'Service Unavailable', detail, ...extra },
      { 'retry-after': retryAfter },
    )

  const busy = () => opts.maxInflight > 0 && inflight >= opts.maxInflight
  const overloaded = (res: ServerResponse) =>
    unavailable(res, `more than ${opts.maxInflight} requests in flight`, RETRY_AFTER_BUSY)

  /**
   * Reads the body (bounded by the server's read deadlines, never counted as in flight: a client
   * trickling its body holds a connection, not a slot), then ingests it within GATEWAY_MAX_INFLIGHT.
   */
  const accept = async (req: IncomingMessage, res: ServerResponse) => {
    const read = await readBody(req, opts.maxBodyBytes, budget)
    if (!read.ok) {
      if (read.reason === 'too-large') tooLarge(req, res)
      if (read.reason === 'over-budget') shed(req, res)
      return // aborted, or the read deadline passed (Node answered 408): nobody is listening
    }
    try {
      if (busy()) return overloaded(res)
      inflight++
      metrics.inflight.inc()
      try {
        await ingestBody(req, res, read.text)
      } finally {
        inflight--
        metrics.inflight.dec()
      }
    } finally {
      read.release()
    }
  }

  /** The body was cut off to stay within the byte budget; the rest of it is never read. */
  const shed = (req: IncomingMessage, res: ServerResponse) => {
    metrics.shed.inc()
    closeLingering(req)
    sendProblem(
      res,
      {
        status: 503,
        title: 'Service Unavailable',
        detail: `the gateway holds ${budget.limit} bytes of request bodies already; retry`,
      },
      { 'retry-after': RETRY_AFTER_BUSY, connection: 'close' },
    )
  }

  const ingestBody = async (req: IncomingMessage, res: ServerResponse, body: string) => {
    const parsed = await parseWebhook(body)
    if (!parsed.ok) {
      const { detail, path, errors } = parsed
      return sendProblem(res, { status: 400, title: 'Bad Request', detail, path, errors })
    }
    const outcome = await ingest(parsed.webhook)
    const { created, duplicates, ignored, pending, failed } = outcome
    const detailed = wantsDetail(req.url)
    if (pending === 0 && failed === 0) {
      const body = detailed
        ? { created, duplicates, ignored, alerts: outcome.alerts }
        : { created, duplicates, ignored }
      return sendJson(res, created > 0 ? 201 : 202, body)
    }
    // Some alert is not stored: 503, so AlertManager retries the batch; what is stored is then a
    // duplicate. The alerts that errored are listed (all of them with ?detail=1).
    const alerts = detailed
      ? outcome.alerts
      : outcome.alerts.filter((a) => a.status === 'pending' || a.status === 'failed')
    const counts = { created, duplicates, ignored, pending, failed, alerts }
    switch (outcome.failure) {
      case 'store-unavailable':
        return unavailable(res, 'the deduplication store is unavailable', RETRY_AFTER_STORE, counts)
      case 'sink-failed':
        return unavailable(res, `the ${opts.sink.name} sink failed`, RETRY_AFTER_STORE, counts)
      default:
        return unavailable(
          res,
          `${pending} alert(s) are being stored by another request that has not finished; retry`,
          RETRY_AFTER_BUSY,
          counts,
        )
    }
  }

  return (req, res) => {
    const stopTimer = metrics.duration.startTimer()
    res.once('finish', () => {
      stopTimer()
      metrics.requests.inc({ code: String(res.statusCode) })
    })
    if (!authorized(req.headers.authorization)) {
      return sendProblem(
        res,
        { status: 401, title: 'Unauthorized', detail: 'a valid bearer token is required' },
        { 'www-authenticate': 'Bearer realm="sia-gateway"' },
      )
    }
    if (!isJson(req.headers['content-type'])) {
      return sendProblem(res, {
        status: 415,
        title: 'Unsupported Media Type',
        detail: 'send application/json',
      })
    }
    if (Number(req.headers['content-length'] ?? 0) > opts.maxBodyBytes) return tooLarge(req, res)
    if (busy()) return overloaded(res)
    if (!store.up()) return unavailable(res, 'the deduplication store is unavailable', RETRY_AFTER_STORE)
    accept(req, res).catch((err: unknown) => {
      log.error({ event: 'gateway.request.failed', err }, 'request failed')
      if (!res.headersSent) sendProblem(res, { status: 500, title: 'Internal Server Error' })
    })
  }
}

/** `?detail=1` (or `true`) asks for one entry per alert in the answer. */
function wantsDetail(url: string | undefined): boolean {
  const q = url?.indexOf('?') ?? -1
  if (q < 0 || url === undefined) return false
  const v = new URLSearchParams(url.slice(q + 1)).get('detail')
  return v === '1' || v === 'true'
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  sendProblem(res, { status: 405, title: 'Method Not Allowed', detail: `use ${allow}` }, { allow })
}

function isJson(contentType: string | undefined): boolean {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase()
  return type === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(type)
}

/**
 * After a 413 the rest of the body is never read. Node destroys a `connection: close` socket as
 * soon as the answer is flushed; with request bytes still unread that sends a TCP RST at once,
 * which can wipe the answer before the client reads it. So half-close after the answer and
 * destroy only LINGER_MS later, still without reading another byte.
 */
function closeLingering(req: IncomingMessage): void {
  const socket = req.socket
  socket.destroySoon = () => {
    socket.end()
    const timer = setTimeout(() => socket.destroy(), LINGER_MS)
    socket.once('close', () => clearTimeout(timer))
  }
}
