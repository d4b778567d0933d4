import type { IncomingMessage, ServerResponse } from 'node:http'
import { readBody } from '../../shared/http/body.js'
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

  const tooLarge = (req: IncomingMessage, res: ServerResponse) => {
    closeLingering(req)
    sendProblem(
      res,
      { status: 413, title: 'Payload Too Large', detail: `body exceeds ${opts.maxBodyBytes} bytes` },
      { connection: 'close' },
    )
  }
  const unavailable = (res: ServerResponse, detail: string, retryAfter: string) =>
    sendProblem(res, { status: 503, title: 'Service Unavailable', detail }, { 'retry-after': retryAfter })

  const accept = async (req: IncomingMessage, res: ServerResponse) => {
    const read = await readBody(req, opts.maxBodyBytes)
    if (!read.ok) {
      if (read.reason === 'too-large') tooLarge(req, res)
      return // aborted: nobody is listening for an answer
    }
    const parsed = parseWebhook(read.body)
    if (!parsed.ok) {
      const { detail, path, errors } = parsed
      return sendProblem(res, { status: 400, title: 'Bad Request', detail, path, errors })
    }
    const outcome = await ingest(parsed.webhook)
    switch (outcome.kind) {
      case 'store-unavailable':
        return unavailable(res, 'the deduplication store is unavailable', RETRY_AFTER_STORE)
      case 'sink-failed':
        return unavailable(res, `the ${outcome.sink} sink failed`, RETRY_AFTER_STORE)
      case 'accepted': {
        const { kind: _, ...body } = outcome
        return sendJson(res, outcome.created > 0 ? 201 : 202, body)
      }
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
    if (opts.maxInflight > 0 && inflight >= opts.maxInflight) {
      return unavailable(res, `more than ${opts.maxInflight} requests in flight`, RETRY_AFTER_BUSY)
    }
    if (!store.up()) return unavailable(res, 'the deduplication store is unavailable', RETRY_AFTER_STORE)
    inflight++
    metrics.inflight.inc()
    accept(req, res)
      .catch((err: unknown) => {
        log.error({ event: 'gateway.request.failed', err }, 'request failed')
        if (!res.headersSent) sendProblem(res, { status: 500, title: 'Internal Server Error' })
      })
      .finally(() => {
        inflight--
        metrics.inflight.dec()
      })
  }
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
