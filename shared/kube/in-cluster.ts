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

/**
 * One request to the API server, its answer read whole. Transport failures reject with
 * ERR_KUBE_API (ERR_KUBE_TIMEOUT past REQUEST_TIMEOUT_MS); any HTTP status resolves.
 */
export function kubeRequest(url: URL, r: KubeRequest): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = https().request(
      url,
      {
        method: r.method,
        agent: r.agent,
        ...(r.signal ? { signal: r.signal } : {}),
        timeout: REQUEST_TIMEOUT_MS,
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
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }))
        res.on('error', reject)
      },
    )
    req.on('timeout', () =>
      req.destroy(codedError('ERR_KUBE_TIMEOUT', 'the API server did not answer in time')),
    )
    req.on('error', (err) =>
      reject(
        (err as { code?: string }).code === 'ERR_KUBE_TIMEOUT'
          ? err
          : codedError('ERR_KUBE_API', `API server ${url.host}: ${err.message}`, err),
      ),
    )
    req.end(r.body?.text)
  })
}
