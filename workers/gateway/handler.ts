import type { IncomingMessage, ServerResponse } from 'node:http'
import { readBody } from '../../shared/http/body.js'
import type { BodyBudget } from '../../shared/http/body-budget.js'
import { type Problem, sendJson, sendProblem } from '../../shared/http/problem.js'
import { originForm } from '../../shared/http/target.js'
import { closeUnread } from '../../shared/http/unread-body.js'
import { bearerChecker } from './auth.js'
import { createIngest, type IngestOptions } from './ingest.js'
import { parseWebhook } from './payload.js'
import { truncationNotes } from './truncated.js'

export const SIGNALS_PATH = '/api/v1/signals/prometheus'
export const READY_PATH = '/ready'
/** Seconds AlertManager (or any client) should wait before retrying a 503. */
const RETRY_AFTER_STORE = '5'
const RETRY_AFTER_BUSY = '1'

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
type WebhookHandler = (req: IncomingMessage, res: ServerResponse, query: string) => void

/**
 * Routes the gateway port: the webhook, /ready, and RFC 7807 answers for everything else. Also
 * the server's `checkContinue` handler: a request that expects `100 Continue` gets it only once
 * the checks that need no body have passed (Node's own handling sends it first, inviting a client
 * refused anyway to upload its body).
 */
export function createHandler(opts: HandlerOptions): Handler {
  const webhook = createWebhookHandler(opts)
  return (req, res) => {
    const target = originForm(req.url)
    const q = target.indexOf('?')
    const path = q < 0 ? target : target.slice(0, q)
    if (path === SIGNALS_PATH) {
      if (req.method !== 'POST') return methodNotAllowed(req, res, 'POST')
      return webhook(req, res, q < 0 ? '' : target.slice(q + 1))
    }
    if (path === READY_PATH) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(req, res, 'GET, HEAD')
      const r = opts.ready()
      closeUnread(req, res)
      return sendJson(res, r.ready ? 200 : 503, r.body)
    }
    refuse(req, res, { status: 404, title: 'Not Found', detail: `no route for ${path}` })
  }
}

/** An answer given without reading the request's body (shared/http/unread-body.ts). */
function refuse(
  req: IncomingMessage,
  res: ServerResponse,
  problem: Problem,
  headers: Record<string, string> = {},
): void {
  closeUnread(req, res)
  sendProblem(res, problem, headers)
}

/**
 * The checks that need no body come first (auth, media type, declared size, load, store), so a
 * rejected request costs nothing. AlertManager retries only 5xx: every condition a retry could
 * fix (store down, overload, sink failure) is a 503, never a 4xx.
 */
function createWebhookHandler(opts: HandlerOptions): WebhookHandler {
  const { store, metrics, log } = opts
  const ingest = createIngest(opts)
  const truncation = truncationNotes(metrics.truncated, log)
  const authorized = opts.authToken ? bearerChecker(opts.authToken) : () => true
  let inflight = 0
  const { budget } = opts

  /** Declared too large, or stopped at the limit: the rest of the body is never read. */
  const tooLarge = (req: IncomingMessage, res: ServerResponse) =>
    refuse(req, res, {
      status: 413,
      title: 'Payload Too Large',
      detail: `body exceeds ${opts.maxBodyBytes} bytes`,
    })
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
  /** Before the body is read: see refuse(). */
  const unavailableEarly = (req: IncomingMessage, res: ServerResponse, detail: string, retryAfter: string) =>
    refuse(req, res, { status: 503, title: 'Service Unavailable', detail }, { 'retry-after': retryAfter })

  const busy = () => opts.maxInflight > 0 && inflight >= opts.maxInflight
  const overloaded = (res: ServerResponse) =>
    unavailable(res, `more than ${opts.maxInflight} requests in flight`, RETRY_AFTER_BUSY)

  /**
   * Reads the body (bounded by the server's read deadlines, never counted as in flight: a client
   * trickling its body holds a connection, not a slot), then ingests it within GATEWAY_MAX_INFLIGHT.
   */
  const accept = async (req: IncomingMessage, res: ServerResponse, query: string) => {
    if (expectsContinue(req)) res.writeContinue()
    const read = await readBody(req, opts.maxBodyBytes, budget)
    if (!read.ok) {
      if (read.reason === 'too-large') tooLarge(req, res)
      if (read.reason === 'over-budget') shed(req, res)
      // Its alerts would be stored, and fingerprinted, with U+FFFD where the bytes were.
      if (read.reason === 'not-utf8')
        refuse(req, res, { status: 400, title: 'Bad Request', detail: 'the body is not UTF-8' })
      return // aborted, or the read deadline passed (Node answered 408): nobody is listening
    }
    try {
      if (busy()) return overloaded(res)
      inflight++
      metrics.inflight.inc()
      try {
        await ingestBody(res, read.text, query)
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
    refuse(
      req,
      res,
      {
        status: 503,
        title: 'Service Unavailable',
        detail: `the gateway holds ${budget.limit} bytes of request bodies already; retry`,
      },
      { 'retry-after': RETRY_AFTER_BUSY },
    )
  }

  const ingestBody = async (res: ServerResponse, body: string, query: string) => {
    const parsed = await parseWebhook(body)
    if (!parsed.ok) {
      const { detail, path, errors } = parsed
      return sendProblem(res, { status: 400, title: 'Bad Request', detail, path, errors })
    }
    const outcome = await ingest(parsed.webhook)
    const { created, duplicates, ignored, rejected, pending, failed } = outcome
    // Only when some alert was: the body of every ordinary answer stays as it was.
    const refused = rejected > 0 ? { rejected } : {}
    const detailed = wantsDetail(query)
    if (pending === 0 && failed === 0) {
      // Counted once the notification is taken: a 503's retry carries the same count again.
      const truncated = truncation(parsed.webhook)
      const cut = truncated > 0 ? { truncated } : {}
      // The alerts refused are listed, as errored ones are (all of them with ?detail=1).
      const listed = detailed
        ? { alerts: outcome.alerts }
        : rejected > 0
          ? { alerts: outcome.alerts.filter((a) => a.status === 'rejected') }
          : {}
      return sendJson(res, created > 0 ? 201 : 202, {
        created,
        duplicates,
        ignored,
        ...refused,
        ...cut,
        ...listed,
      })
    }
    // Some alert is not stored: 503, so AlertManager retries the batch; what is stored is then a
    // duplicate. The alerts that errored are listed (all of them with ?detail=1).
    const alerts = detailed
      ? outcome.alerts
      : outcome.alerts.filter((a) => a.status === 'pending' || a.status === 'failed')
    const counts = { created, duplicates, ignored, ...refused, pending, failed, alerts }
    switch (outcome.failure) {
      case 'store-unavailable':
        return unavailable(res, 'the deduplication store is unavailable', RETRY_AFTER_STORE, counts)
      case 'store-refused':
        return unavailable(
          res,
          "the deduplication store refused an alert's record: its key holds someone else's value",
          RETRY_AFTER_STORE,
          counts,
        )
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

  return (req, res, query) => {
    const stopTimer = metrics.duration.startTimer()
    res.once('finish', () => {
      stopTimer()
      metrics.requests.inc({ code: String(res.statusCode) })
    })
    if (!authorized(req.headers.authorization)) {
      return refuse(
        req,
        res,
        { status: 401, title: 'Unauthorized', detail: 'a valid bearer token is required' },
        { 'www-authenticate': 'Bearer realm="sia-gateway"' },
      )
    }
    const unsupported = unsupportedBody(req)
    if (unsupported) {
      return refuse(req, res, { status: 415, title: 'Unsupported Media Type', detail: unsupported })
    }
    if (Number(req.headers['content-length'] ?? 0) > opts.maxBodyBytes) return tooLarge(req, res)
    if (busy()) {
      return unavailableEarly(req, res, `more than ${opts.maxInflight} requests in flight`, RETRY_AFTER_BUSY)
    }
    if (!store.up()) {
      return unavailableEarly(req, res, 'the deduplication store is unavailable', RETRY_AFTER_STORE)
    }
    accept(req, res, query).catch((err: unknown) => {
      log.error({ event: 'gateway.request.failed', err }, 'request failed')
      if (!res.headersSent) sendProblem(res, { status: 500, title: 'Internal Server Error' })
    })
  }
}

/** `?detail=1` (or `true`) asks for one entry per alert in the answer. */
function wantsDetail(query: string): boolean {
  if (query === '') return false
  const v = new URLSearchParams(query).get('detail')
  return v === '1' || v === 'true'
}

function methodNotAllowed(req: IncomingMessage, res: ServerResponse, allow: string): void {
  refuse(req, res, { status: 405, title: 'Method Not Allowed', detail: `use ${allow}` }, { allow })
}

function expectsContinue(req: IncomingMessage): boolean {
  const expect = req.headers.expect
  return expect !== undefined && /^\s*100-continue\s*$/i.test(expect)
}

/**
 * Why the body cannot be taken as it is sent, or undefined: JSON (`application/json` or a
 * `+json` type) in UTF-8 (JSON's only encoding between systems, RFC 8259 §8.1), uncompressed. A
 * compressed body would otherwise fail as malformed JSON (a 400 AlertManager does not retry)
 * or, mislabelled, be taken as something it is not.
 */
const UTF8_LABELS = new Set(['utf-8', 'utf8', 'us-ascii']) // ASCII: a subset of UTF-8

function unsupportedBody(req: IncomingMessage): string | undefined {
  const [type = '', ...params] = (req.headers['content-type'] ?? '').toLowerCase().split(';')
  const mediaType = type.trim()
  if (mediaType !== 'application/json' && !/^application\/[a-z0-9.+-]+\+json$/.test(mediaType)) {
    return 'send application/json'
  }
  for (const param of params) {
    const [name, value = ''] = param.split('=').map((p) => p.trim())
    if (name === 'charset' && !UTF8_LABELS.has(value.replace(/"/g, ''))) return `send UTF-8, not ${value}`
  }
  const encoding = req.headers['content-encoding']?.trim().toLowerCase()
  if (encoding && encoding !== 'identity')
    return `content-encoding ${encoding} is not supported: send the body uncompressed`
  return undefined
}
