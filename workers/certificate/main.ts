import type { Config } from '../../shared/config/types.js'
import { defineService } from '../../shared/define-service.js'
import { backoffDelay, pause } from '../../shared/identity/backoff.js'
import type { CertProvider } from '../../shared/identity/cert-provider.js'
import { type CsrPool, createCsrPool } from '../../shared/identity/csr-pool.js'
import {
  createIdentityRefresher,
  type Identity,
  readIdentity,
  roleCertPath,
} from '../../shared/identity/identity.js'
import { createLocalCertProvider } from '../../shared/identity/local-cert-provider.js'
import { parseTargets } from '../../shared/identity/targets.js'
import { registerX509Metrics } from './x509-metrics.js'

const INITIAL_BACKOFF_MS = 5_000

function certProvider(config: Config, pool: CsrPool): CertProvider {
  return createLocalCertProvider(config.dataDir, pool, config.refreshInterval)
}

let pool: CsrPool | undefined

/**
 * The certificate service: issues the service identity and role certificates at start, then
 * every REFRESH_INTERVAL; a failed refresh is retried with backoff and never replaces good files.
 */
defineService({
  async start({ config, log, go, registry, signal }) {
    pool = createCsrPool()
    const provider = certProvider(config, pool)
    const refresher = createIdentityRefresher({ config, log, provider, pool })
    const targets = parseTargets(config.targetDomainRoles)
    registerX509Metrics(registry, () => [
      config.certFile,
      config.caCertFile,
      ...targets.map((t) => roleCertPath(config, t)),
    ])

    let identity: Identity | undefined
    try {
      identity = await refresher.refresh(signal)
    } catch (err) {
      identity = await readIdentity(config)
      if (!identity) throw err
      log.warn(
        { event: 'certificate.refresh.failed', err, keeping: config.certFile },
        'could not refresh the identity at start; using the valid one on disk',
      )
    }

    const jitterMs = Math.floor(Math.random() * config.delayJitterSeconds * 1000)
    const maxBackoffMs = Math.max(1, Math.floor(config.refreshInterval / 4))
    log.info(
      {
        event: 'certificate.refresh.scheduled',
        keyFile: config.keyFile,
        certFile: config.certFile,
        roles: config.targetDomainRoles,
        provider: provider.name,
        everyMs: config.refreshInterval,
      },
      `will refresh key[${config.keyFile}], cert[${config.certFile}] and certificates for roles[${config.targetDomainRoles.join(',')}] with provider[${provider.name}] after ${config.refreshInterval}ms`,
    )
    await go('refresh-timer', async (t) => {
      let wait = config.refreshInterval + jitterMs
      let failures = 0
      while (await pause(wait, t.signal)) {
        try {
          identity = await refresher.refresh(t.signal)
          failures = 0
          wait = config.refreshInterval
        } catch (err) {
          if (t.signal.aborted) break
          wait = backoffDelay(failures++, INITIAL_BACKOFF_MS, maxBackoffMs)
          log.warn(
            { event: 'certificate.refresh.failed', err, attempt: failures, retryInMs: wait },
            `refresh failed; keeping the current certificates, retrying in ${wait}ms`,
          )
        }
      }
      return undefined
    })
  },
  async stop() {
    await pool?.close()
  },
})
