import { dirname } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { monotonicMs } from '../clock.js'
import type { Config } from '../config/types.js'
import { codedError } from '../errors.js'
import { readFile } from '../fs-async.js'
import {
  apiUrl,
  expectObject,
  inClusterApi,
  type KubeAnswer,
  kubeAgent,
  kubeRequest,
  parseAnswer,
  readOptional,
} from '../kube/in-cluster.js'
import type { Logger } from '../logger.js'
import { pause } from './backoff.js'
import { checkIssued, type Identity, storeIdentity } from './identity.js'

/**
 * SIA's certificate backup (BACKUP, CERT_SECRET, NAMESPACE): the service key and certificate in a
 * `kubernetes.io/tls` Secret, written by server-side apply after each issue and read on boot when
 * the provider cannot issue. In-cluster access as every Kubernetes client: KUBERNETES_SERVICE_HOST
 * and _PORT, the service-account token (re-read on every call: projected tokens rotate) and CA.
 * Neither the key nor the certificate ever appears in an error or a log record.
 */
export const FIELD_MANAGER = 'athenz-sia-server-side-apply'
const REQUEST_TIMEOUT_MS = 10_000

export interface BackupIdentity {
  keyPem: string
  certPem: string
}

export interface SecretBackup {
  readonly canRead: boolean
  readonly canWrite: boolean
  /** `namespace/name` of the secret, for log records. */
  readonly secret: string
  /** The key and certificate in the secret; undefined when there is no such secret. */
  read(signal: AbortSignal): Promise<BackupIdentity | undefined>
  /** Server-side apply of the secret, owner-referenced to the service account when it can be read. */
  write(id: BackupIdentity, signal: AbortSignal): Promise<{ ownerReference: boolean; ownerError?: Error }>
  close(): void
}

export async function createSecretBackup(config: Config): Promise<SecretBackup> {
  const api = config.backupKubeApi || inClusterApi()
  if (!api) throw codedError('ERR_CONFIG', 'BACKUP_KUBE_API is empty and KUBERNETES_SERVICE_HOST is not set')
  const namespace =
    config.namespace || (await readOptional(`${dirname(config.backupKubeTokenFile)}/namespace`))?.trim() || ''
  if (!namespace) {
    throw codedError(
      'ERR_CONFIG',
      `BACKUP needs NAMESPACE (or the namespace file beside ${config.backupKubeTokenFile})`,
    )
  }
  const agents = kubeAgent(config.backupKubeCaFile, { keepAlive: true })
  const name = config.certSecret
  const ns = encodeURIComponent(namespace)
  const secretPath = `/api/v1/namespaces/${ns}/secrets/${encodeURIComponent(name)}`
  const saPath = `/api/v1/namespaces/${ns}/serviceaccounts/${encodeURIComponent(config.serviceAccount)}`
  let ownerUid: string | undefined

  /** One call for the object `expected` is (a 404 for a GET: none), else throws saying why. */
  const call = async (
    method: string,
    path: string,
    what: string,
    expected: { kind: string; name: string },
    signal: AbortSignal,
    body?: { type: string; text: string },
  ): Promise<{ status: number; json: KubeAnswer }> => {
    const [token, agent] = await Promise.all([
      readOptional(config.backupKubeTokenFile).then((t) => t?.trim()),
      agents.current(),
    ])
    const res = await kubeRequest(apiUrl(api, path), {
      method,
      agent,
      token,
      ...(body ? { body } : {}),
      signal,
    })
    if (res.status >= 200 && res.status < 300) {
      // A 200 page of a proxy in front of the API server: no secret written, no owner read.
      const json = parseAnswer(res.text)
      expectObject(res.status, res.text, json, expected.kind, expected.name)
      return { status: res.status, json }
    }
    if (res.status === 404 && method === 'GET') return { status: 404, json: {} }
    throw Object.assign(apiError(res.status, res.text, what), { retryAfterMs: res.retryAfterMs })
  }

  return {
    canRead: config.backup.includes('read'),
    canWrite: config.backup.includes('write'),
    secret: `${namespace}/${name}`,
    async read(signal) {
      const { status, json } = await call(
        'GET',
        secretPath,
        `get secret ${namespace}/${name}`,
        { kind: 'Secret', name },
        signal,
      )
      if (status === 404) return undefined
      const data = (json.data ?? {}) as Record<string, unknown>
      const certPem = decode(data['tls.crt'])
      const keyPem = decode(data['tls.key'])
      if (!certPem || !keyPem) {
        throw codedError('ERR_BACKUP', `secret ${namespace}/${name} has no tls.crt and tls.key`)
      }
      return { keyPem, certPem }
    },
    async write(id, signal) {
      let ownerError: Error | undefined
      // Read at every write, not once: a ServiceAccount deleted and created again (a reinstall)
      // has a new uid, and a Secret owned by the old one is deleted by the garbage collector as
      // soon as it is written. A failed read keeps the last uid seen; a missing account, none.
      try {
        const { status, json } = await call(
          'GET',
          saPath,
          `get serviceaccount ${namespace}/${config.serviceAccount}`,
          { kind: 'ServiceAccount', name: config.serviceAccount },
          signal,
        )
        if (status === 404) {
          ownerUid = undefined
          throw codedError(
            'ERR_BACKUP',
            `serviceaccount ${namespace}/${config.serviceAccount} not found (SERVICEACCOUNT)`,
          )
        }
        const uid = json.metadata?.uid
        if (typeof uid !== 'string' || !uid) {
          throw codedError(
            'ERR_KUBE_API',
            `serviceaccount ${namespace}/${config.serviceAccount} has no uid (not a Kubernetes API server?)`,
          )
        }
        ownerUid = uid
      } catch (err) {
        if (signal.aborted) throw err
        ownerError = err as Error
      }
      const secret = {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name,
          namespace,
          ...(ownerUid
            ? {
                ownerReferences: [
                  { apiVersion: 'v1', kind: 'ServiceAccount', name: config.serviceAccount, uid: ownerUid },
                ],
              }
            : {}),
        },
        type: 'kubernetes.io/tls',
        data: {
          'tls.crt': Buffer.from(id.certPem).toString('base64'),
          'tls.key': Buffer.from(id.keyPem).toString('base64'),
        },
      }
      const query = new URLSearchParams({ fieldManager: FIELD_MANAGER, force: 'true' })
      // JSON is YAML: the apply-patch content type takes it as it is.
      await call(
        'PATCH',
        `${secretPath}?${query}`,
        `apply secret ${namespace}/${name}`,
        { kind: 'Secret', name },
        signal,
        {
          type: 'application/apply-patch+yaml',
          text: JSON.stringify(secret),
        },
      )
      return { ownerReference: Boolean(ownerUid), ...(ownerError ? { ownerError } : {}) }
    },
    close: () => agents.destroy(),
  }
}

/** Waits before the second and third try of a write the API server could not take just then. */
const RETRY_MS = [1_000, 4_000]
/** The most a Retry-After is waited for; a longer one is the next issue's to try. */
const RETRY_AFTER_MAX_MS = 10_000

/**
 * What a later try may fix: the API server shedding load (429, with its Retry-After) or failing
 * (5xx), a timeout, a transport error. Not a refusal (401, 403, 4xx): the same write fails again.
 */
function transient(err: unknown): boolean {
  const { status, code } = err as { status?: number; code?: string }
  if (status !== undefined) return status === 429 || status >= 500
  return code === 'ERR_KUBE_TIMEOUT' || code === 'ERR_KUBE_API'
}

/**
 * Backup writes in the background, one at a time, after each issue: a failure is logged (403 from
 * RBAC said as such) and never fails the refresh. A write the API server could not take just then
 * (429, 5xx, no answer) is tried twice more, after 1 s and 4 s or its Retry-After (up to 10 s):
 * else the secret would stay stale until the next issue (a day by default), and a pod restarted
 * meanwhile with its provider down would have no backup. No new try once `stop` is aborted or
 * the write abandoned.
 * `settled()` waits for the writes in flight, until a deadline.
 */
export function createBackupWriter(backup: SecretBackup, log: Logger, stop: AbortSignal) {
  let chain: Promise<void> = Promise.resolve()
  const abandon = new AbortController()
  // Abandoned, a write is not tried again: the abort failed its request as a transport error, and
  // its retries outlived the deadline that abandoned it.
  const halt = AbortSignal.any([stop, abandon.signal])
  const attempt = async (id: BackupIdentity) => {
    for (let tries = 0; ; tries++) {
      try {
        return await backup.write(
          id,
          AbortSignal.any([AbortSignal.timeout(REQUEST_TIMEOUT_MS * 2), abandon.signal]),
        )
      } catch (err) {
        const wait = RETRY_MS[tries]
        if (wait === undefined || !transient(err) || halt.aborted) throw err
        const after = (err as { retryAfterMs?: number }).retryAfterMs
        const retryInMs = Math.min(after ?? wait, RETRY_AFTER_MAX_MS)
        log.warn(
          { event: 'certificate.backup.retry', secret: backup.secret, err, retryInMs },
          `the secret ${backup.secret} could not be written now; trying again in ${retryInMs}ms`,
        )
        if (!(await pause(retryInMs, halt))) throw err
      }
    }
  }
  return {
    write(id: BackupIdentity): void {
      if (!backup.canWrite) return
      chain = chain.then(async () => {
        try {
          const r = await attempt(id)
          if (r.ownerError) {
            log.warn(
              { event: 'certificate.backup.owner.failed', secret: backup.secret, err: r.ownerError },
              `the secret ${backup.secret} has no owner reference: ${r.ownerError.message}`,
            )
          }
          log.info(
            { event: 'certificate.backup.written', secret: backup.secret, ownerReference: r.ownerReference },
            `backed up the certificate to the secret ${backup.secret}`,
          )
        } catch (caught) {
          // The client says only that it was aborted: the deadline says why.
          const err = abandon.signal.aborted ? (abandon.signal.reason as Error) : caught
          log.error(
            { event: 'certificate.backup.failed', secret: backup.secret, err },
            `could not back up the certificate to the secret ${backup.secret}: ${(err as Error).message}`,
          )
        }
      })
    },
    /**
     * Resolves once the writes asked for are done, or at `deadline` (shared/clock.ts), the one in
     * flight then abandoned at `what` (logged as failed): a write to a slow API server held the
     * shutdown past the service's deadline, and its thread was terminated (exit 1), or an init
     * done past its deadline (exit 1).
     */
    async settled(deadline: number, what: string, stopped?: AbortSignal): Promise<void> {
      const left = Math.max(0, deadline - monotonicMs())
      const waited = sleep(left, false, { ref: false, ...(stopped ? { signal: stopped } : {}) })
      // Told to stop (an init's SIGTERM) before the deadline: abandoned now, not at the deadline.
      if (await Promise.race([chain.then(() => true), waited.catch(() => false)])) return
      abandon.abort(codedError('ERR_BACKUP', `abandoned at ${stopped?.aborted ? 'the stop' : what}`))
      await chain
    },
  }
}

/**
 * Boot without a provider: the identity in the backup secret, checked (parsable, for its key, our
 * principal, not expired) and written to KEY_FILE/CERT_FILE. Throws, saying why, when there is none.
 */
export async function restoreIdentity(
  config: Config,
  backup: SecretBackup,
  signal: AbortSignal,
): Promise<{ identity: Identity; notAfter: string }> {
  const found = await readBackupIdentity(config, backup, signal)
  await storeRestored(config, backup, found.identity)
  return found
}

/** The identity the backup holds, checked (this principal's, valid, its key's), not yet written. */
export async function readBackupIdentity(
  config: Config,
  backup: SecretBackup,
  signal: AbortSignal,
): Promise<{ identity: Identity; notAfter: string }> {
  const saved = await backup.read(signal)
  if (!saved) throw codedError('ERR_BACKUP', `there is no secret ${backup.secret}`)
  const principal = `${config.athenzDomain}.${config.serviceAccount}`
  let notAfter: string
  try {
    notAfter = new Date(checkIssued(saved.certPem, saved.keyPem, principal).validTo).toISOString()
  } catch (err) {
    throw codedError(
      'ERR_BACKUP',
      `the certificate in ${backup.secret} is unusable: ${(err as Error).message}`,
    )
  }
  const caPem = await readFile(config.caCertFile, 'utf8').catch(() => '')
  return { identity: { keyPem: saved.keyPem, certPem: saved.certPem, caPem }, notAfter }
}

/** Writes a backup's identity to the files, a failure named as the disk's. */
export async function storeRestored(config: Config, backup: SecretBackup, identity: Identity): Promise<void> {
  // The disk's failure, named as such: said as the secret's, a full disk read as a bad backup.
  await storeIdentity(config, identity).catch((err: NodeJS.ErrnoException) => {
    throw codedError(
      'ERR_BACKUP',
      `the certificate in ${backup.secret} is valid, but writing it to ${config.keyFile} and ${config.certFile} failed (${err.code ?? err.message})`,
      err,
    )
  })
}

/** A field of the secret's `data`; anything but a base64 string (a number, an object) is none. */
function decode(b64: unknown): string {
  return typeof b64 === 'string' && b64 ? Buffer.from(b64, 'base64').toString('utf8') : ''
}

/** A metav1.Status failure, in words an operator can act on (RBAC above all). */
function apiError(status: number, text: string, what: string) {
  const s = parseAnswer(text)
  const reason = typeof s.reason === 'string' ? s.reason : ''
  const message = (typeof s.message === 'string' ? s.message : text.slice(0, 200)).replace(/\s+/g, ' ')
  if (status === 403) {
    return Object.assign(
      codedError(
        'ERR_KUBE_FORBIDDEN',
        `forbidden by RBAC: ${what}: ${message} (grant the pod's service account a Role with get and patch, and create for the first apply, on this secret, and get on its serviceaccount)`,
      ),
      { status },
    )
  }
  if (status === 401) {
    return Object.assign(
      codedError('ERR_KUBE_UNAUTHORIZED', `the API server refused the service-account token: ${what}`),
      { status },
    )
  }
  return Object.assign(
    codedError('ERR_KUBE_API', `${what}: API server answered ${status} ${reason}: ${message}`),
    {
      status,
    },
  )
}
