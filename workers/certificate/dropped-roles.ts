import type { Config } from '../../shared/config/types.js'
import { rm } from '../../shared/fs-async.js'
import { roleCertOutputs } from '../../shared/identity/naming.js'
import type { Logger } from '../../shared/logger.js'

/**
 * Removes the role certificates (and their key files) that the configuration before a reload had
 * this service write and the new one does not: left, they stayed on disk stale, a private key
 * among them, no longer refreshed nor watched by x509 metrics. Only paths the previous
 * configuration wrote; a file the new one writes too is kept.
 */
export async function removeDroppedRoleFiles(previous: Config, config: Config, log: Logger): Promise<void> {
  const kept = new Set(roleCertOutputs(config))
  const dropped = roleCertOutputs(previous).filter((f) => !kept.has(f))
  const removed: string[] = []
  for (const file of dropped) {
    try {
      await rm(file)
      removed.push(file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue // never written, or gone already
      log.warn(
        { event: 'certificate.role.remove.failed', file, err: { message: (err as Error).message } },
        `could not remove ${file}, no longer in TARGET_DOMAIN_ROLES`,
      )
    }
  }
  if (removed.length > 0) {
    log.info(
      { event: 'certificate.role.removed', files: removed },
      `removed the role certificate files of roles no longer in TARGET_DOMAIN_ROLES: ${removed.join(', ')}`,
    )
  }
}
