import type { Agent } from 'node:https'
import { https } from '../builtins.js'
import { codedError } from '../errors.js'
import { readFile } from '../fs-async.js'

/**
 * What every in-cluster Kubernetes client reads: the API server from KUBERNETES_SERVICE_HOST and
 * _PORT, the service account's files, and one request at a time. Shared by the gateway's kubernetes sink and the
 * certificate backup to a Secret.
 */
export function inClusterApi(): string {
  const host = process.env.KUBERNETES_SERVICE_HOST
  if (!host) return ''
  const port = process.env.KUBERNETES_SERVICE_PORT || '443'
  return `https://${host.includes(':') ? `[${host}]` : host}:${port}`
}

/** A file's text, or undefined when the path is empty or the file does not exist. */
export async function readOptional(path: string): Promise<string | undefined> {
  if (!path) return undefined
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

/** How long one request to the API server may take. */
const REQUEST_TIMEOUT_MS = 10_000

export interface KubeRequest {
  method: string
  agent: Agent
  /** The service-account token (read fresh by the caller: projected tokens rotate). */
  token: string | undefined
  body?: { type: string; text: string }
  signal?: AbortSignal
}

/** Far above any object this project reads or writes; a larger answer is not read. */
const MAX_ANSWER_BYTES = 4 << 20

/**
 * One request to the API server, its answer read whole. Transport failures reject with
 * ERR_KUBE_API; no whole answer within `timeoutMs` (the socket's idle timeout alone never fires
 * for an answer that trickles in) with ERR_KUBE_TIMEOUT; any HTTP status resolves.
 */
export function kubeRequest(
  url: URL,
  r: KubeRequest,
  timeoutMs = REQUEST_TIMEOUT_MS,
): Promise<{ status: number; text: string }> {
  const deadline = AbortSignal.timeout(timeoutMs)
  const timedOut = () => codedError('ERR_KUBE_TIMEOUT', 'the API server did not answer in time')
  return new Promise((resolve, reject) => {
    const req = https().request(
      url,
      {
        method: r.method,
        agent: r.agent,
        signal: r.signal ? AbortSignal.any([r.signal, deadline]) : deadline,
        timeout: timeoutMs,
        headers: {
          accept: 'application/json',
          ...(r.body
            ? { 'content-type': r.body.type, 'content-length': Buffer.byteLength(r.body.text) }
            : {}),
          ...(r.token ? { authorization: `Bearer ${r.token}` } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        let bytes = 0
        res.on('data', (c: Buffer) => {
          chunks.push(c)
          bytes += c.length
          if (bytes > MAX_ANSWER_BYTES) {
            req.destroy(
              codedError(
                'ERR_KUBE_API',
                `API server ${url.host}: answer larger than ${MAX_ANSWER_BYTES} bytes`,
              ),
            )
          }
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }))
        res.on('error', (err) => reject(deadline.aborted && !r.signal?.aborted ? timedOut() : err))
      },
    )
    req.on('timeout', () => req.destroy(timedOut()))
    req.on('error', (err) => {
      const code = (err as { code?: string }).code
      if (code === 'ERR_KUBE_TIMEOUT' || code === 'ERR_KUBE_API') return reject(err)
      if (deadline.aborted && !r.signal?.aborted) return reject(timedOut())
      reject(codedError('ERR_KUBE_API', `API server ${url.host}: ${err.message}`, err))
    })
    req.end(r.body?.text)
  })
}
