import { writeFileAtomic } from '../atomic-file.js'
import type { Config } from '../config/types.js'
import { codedError } from '../errors.js'
import type { Logger } from '../logger.js'
import { bootDeadline, untilDeadline } from '../start-deadline.js'
import { createBackupWriter, createSecretBackup, restoreIdentity, type SecretBackup } from './backup.js'
import { readIdentity, readOwnIdentity, sayIfAnotherPrincipal } from './identity.js'
import { type TokenFileType, tokenFilePath } from './naming.js'
import { providerKind } from './provider.js'
import { type CertRuntime, createCertRuntime, tokenSourceFor } from './runtime.js'
import { parseTargets } from './targets.js'

/**
 * MODE=init (a Kubernetes init container): obtain the certificates, and the token files when
 * TOKEN_DIR is set, once; resolve 0 on success and 1 on any failure. Runs on the supervisor's main
 * thread before any worker is spawned; it starts no server and leaves nothing running.
 */
export async function runInit(
  config: Config,
  log: Logger,
  signal = new AbortController().signal,
): Promise<0 | 1> {
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
    const onDisk = rt.kind === 'files' ? await readIdentity(config) : await readOwnIdentity(config)
    let identity = onDisk
    if (rt.kind === 'files') {
      if (!identity)
        throw codedError('ERR_NO_IDENTITY', `no valid key/cert in ${config.keyFile}, ${config.certFile}`)
      sayIfAnotherPrincipal(config, identity, log)
      rt.provider.useIdentity?.(identity)
      await rt.refresher.refreshRoles(identity.keyPem, signal)
    } else {
      if (onDisk) rt.provider.useIdentity?.(onDisk)
      // With a backup to stand in, the provider's answer is awaited only until the certificate
      // service's boot fetch would give up: what is left of the deadline is the restore's. Once
      // it answered, what it issued is finished with all of it (nothing could stand in for it).
      const ask =
        backup?.canRead && !onDisk
          ? untilDeadline(signal, bootDeadline(config.services.certificate.startTimeout))
          : signal
      try {
        identity = await rt.refresher.refreshInstance(signal, ask)
        await rt.refresher.refreshRoles(identity.keyPem, signal)
      } catch (err) {
        // BACKUP=read: no certificate from the provider and none on disk, the backup stands in.
        const from = backup
        if (onDisk || issued || !from?.canRead) throw err
        log.warn({ event: 'certificate.boot.failed', err, backup: from.secret }, 'reading the backup secret')
        const restored = await restoreIdentity(config, from, signal).catch((readErr: unknown) => {
          log.error(
            { event: 'certificate.backup.read.failed', secret: from.secret, err: readErr },
            `no usable backup: ${(readErr as Error).message}`,
          )
          throw err
        })
        identity = restored.identity
        rt.provider.useIdentity?.(identity)
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
      await Promise.all(
        files.map(async ({ t, type, file }) => {
          const req = { domain: t.domain, role: t.role, proxyForPrincipal: '' }
          const token =
            type === 'roletoken'
              ? (await source.roleToken({ ...req, minExpiry: expiry, maxExpiry: 0 }, signal)).token
              : (await source.accessToken({ ...req, expiry }, signal)).access_token
          await writeFileAtomic(file, token, 0o600)
        }),
      )
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
    await writer?.settled()
    backup?.close()
    await rt?.close()
  }
}
