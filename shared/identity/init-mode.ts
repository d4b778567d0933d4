import { sweepLeftoversAtStart, writeFileAtomic } from '../atomic-file.js'
import { monotonicMs } from '../clock.js'
import type { Config } from '../config/types.js'
import { codedError } from '../errors.js'
import type { Logger } from '../logger.js'
import { bootDeadline, certificateFetchMs, initBudgetMs } from '../start-deadline.js'
import { retryAtBoot } from './backoff.js'
import { createBackupWriter, createSecretBackup, restoreIdentity, type SecretBackup } from './backup.js'
import { readIdentity, readOwnIdentity, sayIfAnotherPrincipal } from './identity.js'
import { certificateOutputs, type TokenFileType, tokenFilePath, tokenOutputs } from './naming.js'
import { providerKind } from './provider.js'
import { type CertRuntime, createCertRuntime, tokenSourceFor } from './runtime.js'
import { parseTargets } from './targets.js'
import { transient } from './zts-client.js'

/**
 * MODE=init (a Kubernetes init container): obtain the certificates, and the token files when
 * TOKEN_DIR is set, once; resolve 0 on success and 1 on any failure. Runs on the supervisor's main
 * thread before any worker is spawned; it starts no server and leaves nothing running. Each step
 * (the instance certificate, the role certificates, each token) is retried on SIA's schedule at
 * boot while the init's deadline has time, as SIA's init does, but not a refusal.
 */
export async function runInit(
  config: Config,
  log: Logger,
  signal = new AbortController().signal,
): Promise<0 | 1> {
  // What an init ended between staging and renaming (SIGKILL, out of memory) left beside the
  // outputs, whatever its age: no service runs during an init, and nothing else writes them.
  await sweepLeftoversAtStart(
    [...certificateOutputs(config), ...tokenOutputs(config)],
    log,
    'init.leftovers.removed',
    0,
  )
  // The init's deadline (supervisor/main.ts): a try under way has all of it (the cut aborts it),
  // another starts only with time left for it. A backup write under way is abandoned before it
  // (`ends`), for the init to answer within the cut's grace.
  const cutAt = monotonicMs() + initBudgetMs(config)
  const ends = bootDeadline(initBudgetMs(config))
  const retry = <T>(
    step: Record<string, string>,
    work: (s: AbortSignal) => Promise<T>,
    until: number,
    within: AbortSignal,
  ) =>
    retryAtBoot(work, within, {
      ends: until,
      refreshInterval: config.refreshInterval,
      retryable: worthRetrying,
      onRetry: (err, attempt, wait) =>
        log.warn(
          { event: 'init.retry', ...step, err, attempt, retryInMs: wait },
          `${Object.values(step).join(' ')} failed; retrying in ${wait}ms`,
        ),
    })
  let backup: SecretBackup | undefined
  try {
    backup = config.backup && providerKind(config) !== 'files' ? await createSecretBackup(config) : undefined
  } catch (err) {
    log.error({ event: 'init.failed', err }, 'cannot reach the backup secret')
    return 1
  }
  const writer = backup && createBackupWriter(backup, log, signal)
  let issued = false
  let rt: CertRuntime | undefined
  try {
    // Inside the try: a SERVER_CA_CERT that cannot be read is an init that failed, said as such.
    rt = await createCertRuntime(config, log, {
      onIssued: (stored) => {
        issued = true
        writer?.write(stored)
      },
    })
    const { refresher, provider } = rt
    const onDisk = rt.kind === 'files' ? await readIdentity(config) : await readOwnIdentity(config)
    let identity = onDisk
    if (rt.kind === 'files') {
      if (!identity)
        throw codedError('ERR_NO_IDENTITY', `no valid key/cert in ${config.keyFile}, ${config.certFile}`)
      sayIfAnotherPrincipal(config, identity, log)
      provider.useIdentity?.(identity)
      const { keyPem } = identity
      await retry({ step: 'roles' }, (s) => refresher.refreshRoles(keyPem, s), cutAt, signal)
    } else {
      if (onDisk) provider.useIdentity?.(onDisk)
      // With a backup to stand in, the provider's answer is awaited only until the certificate
      // service's boot fetch would give up: what is left of the deadline is the restore's. Once
      // it answered, what it issued is finished with all of it (nothing could stand in for it).
      const asked = backup?.canRead && !onDisk ? bootDeadline(certificateFetchMs(config)) : cutAt
      try {
        const id = await retry(
          { step: 'instance' },
          (ask) => refresher.refreshInstance(signal, ask),
          asked,
          signal,
        )
        identity = id
        await retry({ step: 'roles' }, (s) => refresher.refreshRoles(id.keyPem, s), cutAt, signal)
      } catch (err) {
        // BACKUP=read: no certificate from the provider and none on disk, the backup stands in.
        const from = backup
        if (onDisk || issued || !from?.canRead || signal.aborted) throw err
        log.warn({ event: 'certificate.boot.failed', err, backup: from.secret }, 'reading the backup secret')
        const restored = await restoreIdentity(config, from, signal).catch((readErr: unknown) => {
          log.error(
            { event: 'certificate.backup.read.failed', secret: from.secret, err: readErr },
            `no usable backup: ${(readErr as Error).message}`,
          )
          throw err
        })
        identity = restored.identity
        provider.useIdentity?.(identity)
        log.warn(
          { event: 'certificate.backup.restored', secret: from.secret, notAfter: restored.notAfter },
          `using the certificate from the secret ${from.secret}`,
        )
      }
    }
    const targets = parseTargets(config.targetDomainRoles)
    const types = config.tokenType.split('+') as TokenFileType[]
    const files = targets.flatMap((t) =>
      types.flatMap((type) => {
        const file = tokenFilePath(config, t, type)
        return file ? [{ t, type, file }] : []
      }),
    )
    if (files.length) {
      const source = tokenSourceFor(config, rt.client)
      // As the token service's targets (workers/token/keys.ts): TOKEN_EXPIRY is a role token's
      // least lifetime and an access token's lifetime.
      const expiry = Math.floor(config.tokenExpiry / 1000)
      // The first failure fails the init: the other fetches stop, but a write under way is let
      // finish (or undo itself), so that no staged file is left beside a token file.
      const failing = new AbortController()
      const fetching = AbortSignal.any([signal, failing.signal])
      let failure: { err: unknown } | undefined
      await Promise.allSettled(
        files.map(async ({ t, type, file }) => {
          const req = { domain: t.domain, role: t.role, proxyForPrincipal: '' }
          try {
            const token = await retry(
              { step: type, target: `${t.domain}:role.${t.role}` },
              async (s) =>
                type === 'roletoken'
                  ? (await source.roleToken({ ...req, minExpiry: expiry, maxExpiry: 0 }, s)).token
                  : (await source.accessToken({ ...req, expiry }, s)).access_token,
              cutAt,
              fetching,
            )
            await writeFileAtomic(file, token, 0o600)
          } catch (err) {
            failure ??= { err }
            failing.abort()
          }
        }),
      )
      if (failure) throw failure.err
    }
    log.info(
      {
        event: 'init.done',
        provider: rt.kind,
        certFile: config.certFile,
        tokenDir: config.tokenDir || undefined,
      },
      'credentials fetched once',
    )
    return 0
  } catch (err) {
    log.error(
      { event: 'init.failed', provider: providerKind(config), err },
      'could not fetch the credentials',
    )
    return 1
  } finally {
    // A backup write is never what the init fails for: one still under way at the init's deadline
    // (an API server slow or hung) is abandoned, logged as failed, before the supervisor's cut
    // would have the init stuck (exit 1) with its credentials written.
    await writer?.settled(ends, 'the init deadline', signal)
    backup?.close()
    await rt?.close()
  }
}

/**
 * A refusal (a ZTS 4xx) is answered the same when asked again: the init fails at once. Role
 * certificates (ERR_ROLE_CERTS, its failures as its cause) are asked again while one may pass.
 */
function worthRetrying(err: unknown): boolean {
  const failures = (err as Error).cause
  return Array.isArray(failures) ? failures.some(transient) : transient(err)
}
