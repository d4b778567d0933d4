import type { Agent, AgentOptions } from 'node:https'
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

/** What this project reads of an API server's answer: an object, or a metav1.Status. */
export interface KubeAnswer {
  kind?: unknown
  reason?: unknown
  message?: unknown
  metadata?: { name?: unknown; uid?: unknown }
  data?: unknown
}

/** The answer's JSON object, or {} for one that is none (a proxy's page, an empty body). */
export function parseAnswer(text: string): KubeAnswer {
  try {
    const json = JSON.parse(text) as unknown
    return json && typeof json === 'object' ? (json as KubeAnswer) : {}
  } catch {
    return {}
  }
}

/**
 * A 2xx is the API server's only if its answer is the object asked for (`kind`, named `name`):
 * one from something else (a proxy's sign-in page, a catch-all ingress) stored and read nothing.
 * Throws ERR_KUBE_API otherwise; the answer is quoted unless it is of that kind (a Secret's data
 * is never quoted).
 */
export function expectObject(status: number, text: string, answer: KubeAnswer, kind: string, name: string) {
  if (answer.kind === kind && answer.metadata?.name === name) return
  const what =
    answer.kind === kind ? `a ${kind} named ${JSON.stringify(answer.metadata?.name)}` : text.slice(0, 200)
  throw codedError(
    'ERR_KUBE_API',
    `the answer ${status} is not the ${kind} "${name}" (not a Kubernetes API server?): ${what}`,
  )
}

/** How long one request to the API server may take. */
const REQUEST_TIMEOUT_MS = 10_000

/**
 * `path` (with its query) under the API server's URL, after the URL's own path: a server reached
 * through a proxy at a path (`https://rancher/k8s/clusters/c-1`) is asked at
 * `/k8s/clusters/c-1/api/v1/…`, as kubectl asks it, not at the host's root.
 */
export function apiUrl(api: string, path: string): URL {
  const url = new URL(api)
  const query = path.indexOf('?')
  url.pathname = url.pathname.replace(/\/+$/, '') + (query < 0 ? path : path.slice(0, query))
  url.search = query < 0 ? '' : path.slice(query)
  return url
}

export interface KubeAgent {
  /** The agent to make the next call with, trusting the CA file as it is now. */
  current(): Promise<Agent>
  destroy(): void
}

/**
 * The HTTPS agent for the API server, its CA file read again before every call (as the token is):
 * the kubelet rewrites the projected `ca.crt` when the cluster's CA rotates, and an agent built
 * once fails every call after that ("certificate signature failure"), the gateway not ready, until
 * the pod restarts. A changed CA gets a new agent; the old one ends once the calls it carries have
 * had their time. Without the file (or with no path), Node's own CAs.
 */
export function kubeAgent(caFile: string, options: AgentOptions = {}): KubeAgent {
  let agent: Agent | undefined
  let ca: string | undefined
  const retired = new Set<Agent>()
  return {
    async current() {
      const now = await readOptional(caFile)
      if (agent && now === ca) return agent
      if (agent) {
        const old = agent
        retired.add(old)
        setTimeout(() => {
          old.destroy()
          retired.delete(old)
        }, REQUEST_TIMEOUT_MS).unref()
      }
      ca = now
      agent = new (https().Agent)({ ...options, ...(now ? { ca: now } : {}) })
      return agent
    },
    destroy() {
      agent?.destroy()
      for (const old of retired) old.destroy()
      retired.clear()
    },
  }
}

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
 * ERR_KUBE_API; no whole answer within `timeoutMs` of the request getting its connection (the
 * socket's idle timeout alone never fires for an answer that trickles in) with ERR_KUBE_TIMEOUT;
 * any HTTP status resolves. The time a request waits in its agent's queue (an agent whose
 * connections are bounded, all busy) is not the API server's: counted, a busy queue failed as a
 * dead server; the caller bounds it with `signal`, and each request ahead is bounded.
 *
 * A kept-alive connection the server (or a load balancer on the way) closed while it sat idle in
 * the pool fails the request sent on it before any answer: sent again once, on a new connection,
 * within the same deadline. Every request made here may be repeated: a create by name finds its
 * own object (409), an apply or a read is the same twice.
 */
export function kubeRequest(
  url: URL,
  r: KubeRequest,
  timeoutMs = REQUEST_TIMEOUT_MS,
): Promise<{ status: number; text: string; retryAfterMs?: number }> {
  const timeout = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const connected = () => {
    timer ??= setTimeout(() => timeout.abort(), timeoutMs).unref()
  }
  return send(url, r, timeoutMs, { signal: timeout.signal, connected }, true).finally(() =>
    clearTimeout(timer),
  )
}

function send(
  url: URL,
  r: KubeRequest,
  timeoutMs: number,
  deadline: { signal: AbortSignal; connected(): void },
  mayRepeat: boolean,
): Promise<{ status: number; text: string; retryAfterMs?: number }> {
  const timedOut = () => codedError('ERR_KUBE_TIMEOUT', 'the API server did not answer in time')
  return new Promise((resolve, reject) => {
    let answered = false
    const req = https().request(
      url,
      {
        method: r.method,
        agent: r.agent,
        signal: r.signal ? AbortSignal.any([r.signal, deadline.signal]) : deadline.signal,
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
        answered = true
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
        res.on('end', () => {
          // Retry-After in seconds, as the API server sends it with 429 (its priority and fairness).
          const after = Number(res.headers['retry-after'])
          resolve({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString(),
            ...(Number.isInteger(after) && after >= 0 ? { retryAfterMs: after * 1000 } : {}),
          })
        })
        res.on('error', (err) =>
          reject(
            deadline.signal.aborted && !r.signal?.aborted
              ? timedOut()
              : codedError('ERR_KUBE_API', `API server ${url.host}: ${err.message}`, err),
          ),
        )
      },
    )
    // A repeat, sent on a new connection, keeps the first one's deadline.
    req.once('socket', deadline.connected)
    req.on('timeout', () => req.destroy(timedOut()))
    req.on('error', (err) => {
      const code = (err as { code?: string }).code
      if (code === 'ERR_KUBE_TIMEOUT' || code === 'ERR_KUBE_API') return reject(err)
      if (deadline.signal.aborted && !r.signal?.aborted) return reject(timedOut())
      const closedIdle = code === 'ECONNRESET' || code === 'EPIPE'
      if (mayRepeat && closedIdle && req.reusedSocket && !answered && !r.signal?.aborted) {
        // The agent has let go of that connection; one it closed earlier is out of its pool too.
        return resolve(send(url, r, timeoutMs, deadline, false))
      }
      reject(codedError('ERR_KUBE_API', `API server ${url.host}: ${err.message}`, err))
    })
    req.end(r.body?.text)
  })
}
