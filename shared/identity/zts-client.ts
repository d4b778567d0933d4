import type { Agent } from 'node:https'
import { https } from '../builtins.js'
import { codedError } from '../errors.js'
import { quoted } from '../log-quote.js'
import { backoffDelay, pause } from './backoff.js'
import type { Identity } from './identity.js'

/**
 * A minimal Athenz ZTS client over mutual TLS: JSON or form bodies, `{code, message}` errors,
 * retries with backoff on network errors and 5xx. The client certificate is the current service
 * identity, swapped in when a new one is announced.
 */
export interface ZtsClient {
  call<T>(method: string, path: string, body: ZtsBody | undefined, signal: AbortSignal): Promise<T>
  /** Returns the identity it replaces. */
  setIdentity(identity: Identity | undefined): Identity | undefined
  hasIdentity(): boolean
  close(): void
}

export type ZtsBody = { json: unknown } | { form: Record<string, string> }

export interface ZtsClientOptions {
  /** e.g. https://zts.example:4443/zts/v1 */
  endpoint: string
  /** PEM of the CA that signs ZTS's server certificate; empty: the system CAs. */
  serverCaPem: string
  attempts?: number
  initialBackoffMs?: number
  /** The deadline of one attempt, its whole answer included. */
  timeoutMs?: number
}

/**
 * Whether a failure may pass when asked again: no answer, or a 5xx. An answer that refuses (a 4xx:
 * not authorized, no such role) gets the same answer again.
 */
export function transient(err: unknown): boolean {
  const status = (err as { status?: number }).status
  return status === undefined || status >= 500
}

const MAX_BACKOFF_MS = 2_000
/** Far above any certificate chain or token ZTS returns; a larger answer is not read. */
const MAX_ANSWER_BYTES = 1 << 20

export function createZtsClient(opts: ZtsClientOptions): ZtsClient {
  const base = opts.endpoint.replace(/\/+$/, '')
  const attempts = opts.attempts ?? 3
  let agent = makeAgent(undefined)
  let identity: Identity | undefined

  function makeAgent(id: Identity | undefined): Agent {
    return new (https().Agent)({
      keepAlive: true,
      ...(opts.serverCaPem ? { ca: opts.serverCaPem } : {}),
      ...(id ? { key: id.keyPem, cert: id.certPem } : {}),
    })
  }

  function once<T>(method: string, path: string, body: ZtsBody | undefined, signal: AbortSignal): Promise<T> {
    const payload =
      body === undefined
        ? undefined
        : 'json' in body
          ? { type: 'application/json', data: JSON.stringify(body.json) }
          : { type: 'application/x-www-form-urlencoded', data: new URLSearchParams(body.form).toString() }
    const timeoutMs = opts.timeoutMs ?? 10_000
    // As errors quote it: it holds the domain and role names a token request asked for.
    const call = `${method} ${quoted(path)}`
    // A deadline on the whole attempt: the socket's idle timeout alone never fires for an answer
    // that trickles in a byte at a time.
    const deadline = AbortSignal.timeout(timeoutMs)
    const failed = (err: Error) =>
      codedError(
        'ERR_UPSTREAM',
        `ZTS ${call}: ${deadline.aborted && !signal.aborted ? `no answer within ${timeoutMs}ms` : err.message}`,
        err,
      )
    return new Promise<T>((resolve, reject) => {
      const req = https().request(
        `${base}${path}`,
        {
          method,
          agent,
          signal: AbortSignal.any([signal, deadline]),
          timeout: timeoutMs,
          headers: {
            accept: 'application/json',
            ...(payload
              ? { 'content-type': payload.type, 'content-length': Buffer.byteLength(payload.data) }
              : {}),
          },
        },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => {
            text += d
            if (text.length > MAX_ANSWER_BYTES)
              req.destroy(new Error(`answer larger than ${MAX_ANSWER_BYTES} bytes`))
          })
          res.on('error', (err) => reject(failed(err)))
          res.on('end', () => {
            const status = res.statusCode ?? 0
            let json: unknown
            try {
              json = text ? JSON.parse(text) : undefined
            } catch {
              json = undefined
            }
            if (status >= 200 && status < 300) {
              // Every call but DELETE is answered a JSON object: an empty or cut body, a proxy's
              // page, is no answer (an empty refresh became a silent register anew), and is tried
              // again as a 5xx is. The body is not quoted: a cut one may hold part of a token.
              if (method === 'DELETE' || (json !== null && typeof json === 'object'))
                return resolve(json as T)
              return reject(
                codedError('ERR_UPSTREAM', `ZTS ${call} answered ${status} without a JSON object`),
              )
            }
            // ZTS's own error (its ResourceError: `{code, message}`), or a page of something else
            // on the way (a proxy's 404 for a wrong ENDPOINT path), which refuses nothing the
            // client asked for: a failure of the provider, whatever its status.
            const said = json as { code?: unknown; message?: unknown } | undefined
            const fromZts = typeof said?.code === 'number' && typeof said.message === 'string'
            const message = fromZts ? (said.message as string).slice(0, 500) : text.slice(0, 200)
            reject(
              Object.assign(codedError('ERR_UPSTREAM', `ZTS ${call} answered ${status}: ${message}`), {
                status,
                fromZts,
              }),
            )
          })
        },
      )
      req.on('timeout', () => req.destroy(new Error('timed out')))
      req.on('error', (err) => reject(failed(err)))
      req.end(payload?.data)
    })
  }

  return {
    async call<T>(method: string, path: string, body: ZtsBody | undefined, signal: AbortSignal) {
      for (let attempt = 0; ; attempt++) {
        try {
          return await once<T>(method, path, body, signal)
        } catch (err) {
          if (signal.aborted || attempt + 1 >= attempts || !transient(err)) throw err
          if (!(await pause(backoffDelay(attempt, opts.initialBackoffMs ?? 200, MAX_BACKOFF_MS), signal)))
            throw err
        }
      }
    },
    setIdentity(id) {
      const was = identity
      if (id?.certPem === was?.certPem) return was
      identity = id
      agent.destroy()
      agent = makeAgent(id)
      return was
    },
    hasIdentity: () => identity !== undefined,
    close: () => agent.destroy(),
  }
}
