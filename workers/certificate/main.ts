import { readFile } from 'node:fs/promises'
import { writeFileAtomic } from '../../shared/atomic-file.js'
import type { Config } from '../../shared/config/types.js'
import { defineService } from '../../shared/define-service.js'
import {
  generateRsaKey,
  issueCertificate,
  loadOrCreateAuthority,
} from '../../shared/identity/local-authority.js'
import type { Logger } from '../../shared/logger.js'
import { timerTask } from '../../shared/timer-task.js'

/** Issues the service identity from the local authority and refreshes it every REFRESH_INTERVAL. */
async function refreshIdentity(config: Config, log: Logger): Promise<void> {
  const ca = await loadOrCreateAuthority(config.dataDir)
  const { privateKeyPem, publicKeyPem } = await generateRsaKey()
  const domainDashed = config.athenzDomain.replaceAll('.', '-')
  const certPem = issueCertificate(ca, {
    publicKeyPem,
    commonName: `${config.athenzDomain}.${config.serviceAccount}`,
    dnsNames: [`${config.serviceAccount}.${domainDashed}.${config.dnsSuffix}`],
    uris: [`spiffe://${config.athenzDomain}/sa/${config.serviceAccount}`],
    ips: config.podIp ? [config.podIp] : [],
    validityMs: Math.max(2 * config.refreshInterval, 3600_000),
  })
  // Key first, then cert: a reader pairing them never sees a cert for a key that is not there.
  await writeFileAtomic(config.keyFile, privateKeyPem, 0o600)
  await writeFileAtomic(config.certFile, certPem, 0o644)
  if ((await readFile(config.caCertFile, 'utf8').catch(() => '')) !== ca.certPem) {
    await writeFileAtomic(config.caCertFile, ca.certPem, 0o644)
  }
  log.info(
    { event: 'certificate.refreshed', certFile: config.certFile, keyFile: config.keyFile },
    'identity refreshed',
  )
}

defineService({
  async start({ config, log, go }) {
    await refreshIdentity(config, log)
    const jitterMs = Math.floor(Math.random() * config.delayJitterSeconds * 1000)
    await go(
      'refresh-timer',
      timerTask(
        (i) => config.refreshInterval + (i === 0 ? jitterMs : 0),
        () =>
          refreshIdentity(config, log).catch((err) =>
            log.error({ err }, 'refresh failed; keeping the current identity'),
          ),
      ),
    )
  },
})
