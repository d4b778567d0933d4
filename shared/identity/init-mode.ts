import { writeFileAtomic } from '../atomic-file.js'
import type { Config } from '../config/types.js'
import { codedError } from '../errors.js'
import type { Logger } from '../logger.js'
import { readIdentity } from './identity.js'
import { type TokenFileType, tokenFilePath } from './naming.js'
import { createCertRuntime, tokenSourceFor } from './runtime.js'
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
  const rt = await createCertRuntime(config, log)
  try {
    const onDisk = await readIdentity(config)
    let identity = onDisk
    if (rt.kind === 'files') {
      if (!identity)
        throw codedError('ERR_NO_IDENTITY', `no valid key/cert in ${config.keyFile}, ${config.certFile}`)
      rt.provider.useIdentity?.(identity)
      await rt.refresher.refreshRoles(identity.keyPem, signal)
    } else {
      if (onDisk) rt.provider.useIdentity?.(onDisk)
      identity = await rt.refresher.refresh(signal)
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
      const maxExpiry = Math.floor(config.tokenExpiry / 1000)
      await Promise.all(
        files.map(async ({ t, type, file }) => {
          const req = { domain: t.domain, role: t.role, proxyForPrincipal: '' }
          const token =
            type === 'roletoken'
              ? (await source.roleToken({ ...req, minExpiry: 0, maxExpiry }, signal)).token
              : (await source.accessToken({ ...req, expiry: maxExpiry }, signal)).access_token
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
    log.error({ event: 'init.failed', provider: rt.kind, err }, 'could not fetch the credentials')
    return 1
  } finally {
    await rt.close()
  }
}
