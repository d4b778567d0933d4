import { hostname } from 'node:os'
import type { Config } from '../config/types.js'
import type { CsrSpec } from './csr.js'
import { DEFAULT_SUBJECT, parseSubject } from './subject.js'
import type { Target } from './targets.js'

/** The names k8s-athenz-sia puts in its CSRs (PrepareIdentityCsrOptions / PrepareRoleCsrOptions). */
export function instanceId(config: Config): string {
  return config.podUid || hostname()
}

/** The service's Athenz principal, the CN of its certificate. */
export function principalOf(config: Config): string {
  return `${config.athenzDomain}.${config.serviceAccount}`
}

function serviceHost(config: Config): string {
  return `${config.serviceAccount}.${config.athenzDomain.replaceAll('.', '-')}.${config.dnsSuffix}`
}

export function serviceCsrSpec(config: Config, keyPem: string): CsrSpec {
  const id = instanceId(config)
  return {
    keyPem,
    commonName: principalOf(config),
    // CERT_SUBJECT replaces SIA's default subject besides the CN (validated at load).
    subject: config.certSubject ? parseSubject(config.certSubject) : DEFAULT_SUBJECT,
    dnsNames: [
      ...new Set([
        serviceHost(config),
        `*.${serviceHost(config)}`,
        `${id}.instanceid.athenz.${config.dnsSuffix}`,
        ...config.certExtraSanDns,
      ]),
    ],
    uris: [
      `spiffe://${config.athenzDomain}/sa/${config.serviceAccount}`,
      `athenz://instanceid/${config.providerService || 'local'}/${id}`,
    ],
    ips: config.podIp ? [config.podIp] : [],
  }
}

export function roleCsrSpec(config: Config, keyPem: string, target: Target): CsrSpec {
  return {
    keyPem,
    commonName: `${target.domain}:role.${target.role}`,
    dnsNames: [serviceHost(config)],
    emails: [`${config.athenzDomain}.${config.serviceAccount}@${config.dnsSuffix}`],
    uris: [`spiffe://${target.domain}/ra/${target.role}`],
    ips: [],
  }
}
