import { createHash, randomUUID } from 'node:crypto'
import { codedError } from '../../shared/errors.js'
import {
  apiUrl,
  expectObject,
  inClusterApi,
  type KubeAgent,
  kubeAgent,
  kubeRequest,
  parseAnswer,
  readOptional,
} from '../../shared/kube/in-cluster.js'
import { eachSliced } from '../../shared/slices.js'
import type { Sink, SinkRecord } from './sink.js'

const SERVICE_ACCOUNT_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace'
/** Creates in flight per batch; the agent's connections are bounded by the same number. */
const CREATES_AT_ONCE = 16
/** How kube-apiserver's generic registry begins an AlreadyExists for an object being deleted. */
const BEING_DELETED = 'object is being deleted: '

export interface KubeSinkOptions {
  /** API server base URL; empty: in-cluster (KUBERNETES_SERVICE_HOST/PORT). */
  api: string
  tokenFile: string
  caFile: string
  /** Empty: the pod's own namespace, else `default`. */
  namespace: string
  group: string
  version: string
  kind: string
  /** Empty: lower-case kind + "s". */
  plural: string
}

/**
 * One custom resource per new alert, created with POST on the API server's REST path. The name is
 * derived from the fingerprint, status and start, so AlertManager's retry after a failed request
 * finds its own resource: 409 AlreadyExists counts as success, unless that resource is being
 * deleted (then the write fails, and the retry after the deletion creates it again).
 */
export async function createKubernetesSink(opts: KubeSinkOptions): Promise<Sink> {
  const api = opts.api || inClusterApi()
  if (!api) {
    throw codedError('ERR_CONFIG', 'GATEWAY_KUBE_API is empty and KUBERNETES_SERVICE_HOST is not set')
  }
  const namespace = opts.namespace || (await readOptional(SERVICE_ACCOUNT_NAMESPACE))?.trim() || 'default'
  const plural = opts.plural || `${opts.kind.toLowerCase()}s`
  const url = apiUrl(
    api,
    `/apis/${opts.group}/${opts.version}/namespaces/${encodeURIComponent(namespace)}/${plural}`,
  )

  // A server-side dry run goes through authentication, authorization, admission and the schema,
  // and stores nothing: what a create needs, checked without creating.
  const dryRunUrl = new URL(url)
  dryRunUrl.searchParams.set('dryRun', 'All')
  // Creates: connections bounded across the batches in flight, more wait in the agent's queue.
  const creating: Via = {
    url,
    agents: kubeAgent(opts.caFile, { keepAlive: true, maxSockets: CREATES_AT_ONCE }),
  }
  // Dry runs on a connection of their own: the readiness probe of a sink marked down, queued
  // behind the creates in flight, waited for their answers (seconds with a slow etcd; a dry run
  // stores nothing) before it could tell that the server takes creates again.
  const dryRun: Via = { url: dryRunUrl, agents: kubeAgent(opts.caFile, { keepAlive: true, maxSockets: 1 }) }

  const create = async (r: SinkRecord, via = creating, signal?: AbortSignal) => {
    // Projected service-account tokens and the cluster's CA rotate: read the files on every write.
    const [token, agent] = await Promise.all([
      readOptional(opts.tokenFile).then((t) => t?.trim()),
      via.agents.current(),
    ])
    const name = resourceName(r)
    const body = JSON.stringify({
      apiVersion: `${opts.group}/${opts.version}`,
      kind: opts.kind,
      metadata: {
        name,
        namespace,
        labels: { 'app.kubernetes.io/managed-by': 'sia-supervisor', 'sia.athenz.io/alert-status': r.status },
      },
      spec: r,
    })
    const { status, text } = await kubeRequest(via.url, {
      method: 'POST',
      agent,
      token,
      body: { type: 'application/json', text: body },
      ...(signal ? { signal } : {}),
    })
    const answer = parseAnswer(text)
    // Created (or, dry run, would be) only if the answer is the object.
    if (status >= 200 && status < 300) return expectObject(status, text, answer, opts.kind, name)
    const reason = typeof answer.reason === 'string' ? answer.reason : ''
    // Bounded: it goes into the log line and the 503's detail.
    const message = (typeof answer.message === 'string' ? answer.message : text).slice(0, 500)
    const exists = status === 409 && reason === 'AlreadyExists'
    if (exists && !message.startsWith(BEING_DELETED)) return
    const err = codedError('ERR_KUBE_API', `API server answered ${status} ${reason}: ${message}`)
    // An object whose deletion is under way (a finalizer pending) will be gone, and the alert
    // with it; its name is free once the deletion ends: a retry then creates it.
    if (exists) throw Object.assign(err, { deferred: true })
    // Perhaps the object itself: bad, too large, against the resource's schema, or denied by an
    // admission webhook (403, as RBAC's: a dry run of an ordinary alert tells them apart), as
    // opposed to the credentials, the server, or the resource type, which fail every object alike.
    throw Object.assign(err, { invalid: [400, 403, 413, 422].includes(status) })
  }

  return {
    name: 'kubernetes',
    async write(records, signal, stored) {
      // A few creates at a time: a batch of thousands must not open thousands of connections
      // (and descriptors, which the whole process shares) at once.
      let created = 0
      let failed: { err: unknown } | undefined
      const invalid: { index: number; reason: string }[] = []
      let deferred: { reason: string; count: number } | undefined
      // Once a create failed for a reason that is not its object (429, 5xx, a reset), no more are
      // started: the rest would meet the same server (one batch of hundreds against an API server
      // that throttles). Those in flight finish, and what they create is kept.
      const halt = new AbortController()
      // One alert refused for what it holds must not hold back every later webhook of its
      // group (AlertManager retries a 503 for ever): refused for good only if a record like any
      // other passes a dry run. If not, the sink refuses everything (RBAC, a wrong resource type
      // or schema): a failure, as any other, and no more creates are started. So a refusal runs
      // that dry run, and creates not yet started wait for it: they were one per alert, hundreds
      // a batch at every retry, all refused. Its answer speaks only for the creates started
      // before it came: the server may refuse everything from then on (a stricter schema rolled
      // out, an admission policy), and a later create's refusal, taken on the old answer, was
      // committed as "rejected", the alert lost. Such a refusal runs a dry run of its own (about
      // one per 16 creates when many alerts are bad: the lanes resume together after each).
      let started = 0
      let ordinary: DryRunAnswer | undefined
      const ordinaryFor = (sent: number): Promise<Error | undefined> => {
        if (!ordinary || sent >= ordinary.covers) {
          const next: DryRunAnswer = {
            covers: Number.POSITIVE_INFINITY,
            refusal: create(probeRecord(), dryRun, signal).then(
              () => undefined,
              (e: unknown) => e as Error,
            ),
          }
          // Before any waiter resumes: the creates they start are not covered.
          void next.refusal.then(() => {
            next.covers = started
          })
          ordinary = next
        }
        return ordinary.refusal
      }
      await eachSliced(
        records.map((r, index) => ({ r, index })),
        CREATES_AT_ONCE,
        async ({ r, index }) => {
          if (ordinary) await ordinary.refusal
          if (halt.signal.aborted) return
          const sent = started++
          try {
            await create(r, creating, signal)
            created++
            stored?.(index)
          } catch (err) {
            const tags = err as { invalid?: boolean; deferred?: boolean }
            if (tags.invalid) {
              const reason = (err as Error).message
              invalid.push({ index, reason })
              const refusesAll = await ordinaryFor(sent)
              if (!refusesAll) return
              failed ??= {
                err: codedError(
                  'ERR_KUBE_API',
                  `${reason}; a dry run of an ordinary alert failed too: ${refusesAll.message}`,
                ),
              }
              halt.abort()
            } else if (tags.deferred) {
              deferred ??= { reason: (err as Error).message, count: 0 }
              deferred.count++
            } else {
              failed ??= { err }
              halt.abort()
            }
          }
        },
        signal ? AbortSignal.any([signal, halt.signal]) : halt.signal,
      )
      if (failed) throw failed.err
      if (created + invalid.length + (deferred?.count ?? 0) < records.length) {
        throw signal?.reason ?? new Error('not every record was created')
      }
      // Before the refused are told apart: the retry meets them again.
      if (deferred) {
        throw codedError(
          'ERR_SINK_DEFERRED',
          `${deferred.count} alert(s) name an object being deleted: ${deferred.reason}`,
        )
      }
      if (invalid.length === 0) return
      throw Object.assign(
        codedError(
          'ERR_SINK_REFUSED',
          `the API server refused ${invalid.length} alert(s): ${invalid[0]!.reason}`,
        ),
        { refused: invalid },
      )
    },
    /** A failed sink is ready again once the API server would accept a create (DESIGN.md §7). */
    probe: () => create(probeRecord(), dryRun),
    async close() {
      creating.agents.destroy()
      dryRun.agents.destroy()
    },
  }
}

/** A dry run of an ordinary alert: its refusal, if any, for the creates sent before it was answered. */
interface DryRunAnswer {
  /** How many of the batch's creates were started when it was answered (until then: all). */
  covers: number
  refusal: Promise<Error | undefined>
}

/** Where a create goes: its URL, and the agents of its connections. */
interface Via {
  url: URL
  agents: KubeAgent
}

/** A valid DNS-1123 name, stable for one fingerprint, status and start. */
export function resourceName(r: SinkRecord): string {
  const h = createHash('sha256')
    .update(`${r.fingerprint}\0${r.status}\0${r.startsAt ?? ''}`)
    .digest('hex')
  return `alert-${h.slice(0, 32)}`
}

/** What a probe dry-runs: a record like any other, under a name no alert has. */
function probeRecord(): SinkRecord {
  const now = new Date().toISOString()
  return {
    fingerprint: `probe-${randomUUID()}`,
    alertname: 'SiaGatewaySinkProbe',
    status: 'firing',
    severity: null,
    namespace: null,
    labels: { alertname: 'SiaGatewaySinkProbe' },
    annotations: {},
    startsAt: now,
    endsAt: null,
    generatorURL: null,
    receiver: null,
    receivedAt: now,
  }
}
