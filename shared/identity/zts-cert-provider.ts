import type { Config } from '../config/types.js'
import { codedError } from '../errors.js'
import { readFile } from '../fs-async.js'
import type { Logger } from '../logger.js'
import type { CertProvider } from './cert-provider.js'
import { instanceId } from './identity-spec.js'
import type { ZtsClient } from './zts-client.js'

/** ZTS InstanceIdentity, the answer to register and refresh. */
interface InstanceIdentity {
  provider: string
  name: string
  instanceId: string
  x509Certificate: string
  x509CertificateSigner?: string
}

/**
 * Certificates from Athenz ZTS as k8s-athenz-sia gets them: register (POST /instance, 201) the
 * first time, refresh (POST /instance/{provider}/{domain}/{service}/{id}) over mutual TLS with the
 * current certificate afterwards, role certificates from POST /rolecert.
 */
export function createZtsCertProvider(config: Config, client: ZtsClient, log: Logger): CertProvider {
  let id = instanceId(config)
  const path = () =>
    `/instance/${encodeURIComponent(config.providerService)}/${encodeURIComponent(config.athenzDomain)}/${encodeURIComponent(config.serviceAccount)}/${encodeURIComponent(id)}`

  async function register(csr: string, signal: AbortSignal): Promise<InstanceIdentity> {
    const attestationData = config.saTokenFile ? (await readFile(config.saTokenFile, 'utf8')).trim() : ''
    const res = await client.call<InstanceIdentity>(
      'POST',
      '/instance',
      {
        json: {
          provider: config.providerService,
          domain: config.athenzDomain,
          service: config.serviceAccount,
          attestationData,
          csr,
        },
      },
      signal,
    )
    if (res.instanceId) id = res.instanceId
    return res
  }

  return {
    name: 'zts',
    async instance(csr, signal) {
      let res: InstanceIdentity | undefined
      if (client.hasIdentity()) {
        try {
          res = await client.call<InstanceIdentity>('POST', path(), { json: { csr } }, signal)
        } catch (err) {
          if (signal.aborted) throw err
          // As SIA: a refresh that failed (after its retries) falls back to a fresh register,
          // with the new key of this CSR.
          log.warn(
            { event: 'certificate.refresh.register', err },
            'instance refresh failed; registering the instance anew',
          )
        }
      }
      res ??= await register(csr, signal)
      return { certPem: res.x509Certificate, caPem: res.x509CertificateSigner ?? '' }
    },
    async caBundle(name, signal) {
      const res = await client.call<{ name: string; certs: string }>(
        'GET',
        `/cacerts/${encodeURIComponent(name)}`,
        undefined,
        signal,
      )
      return res.certs ?? ''
    },
    roleCert: roleCertFrom(client),
    useIdentity: (identity) => client.setIdentity(identity),
    async deleteInstance(signal) {
      await client.call('DELETE', path(), undefined, signal)
    },
  }
}

/** POST /rolecert: the same for the zts and files providers. */
function roleCertFrom(client: ZtsClient): CertProvider['roleCert'] {
  return async (csr, _target, signal) => {
    const res = await client.call<{ x509Certificate: string }>('POST', '/rolecert', { json: { csr } }, signal)
    return res.x509Certificate
  }
}

/** Role certificates only: the identity is someone else's business (`files`). */
export function createZtsRoleCertProvider(client: ZtsClient): CertProvider {
  return {
    name: 'files',
    instance: async () => {
      throw codedError('ERR_PROVIDER', 'the files provider does not issue instance certificates')
    },
    roleCert: roleCertFrom(client),
    useIdentity: (identity) => client.setIdentity(identity),
  }
}
