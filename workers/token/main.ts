import { readFile } from 'node:fs/promises'
import { createServer as createHttpServer, type Server } from 'node:http'
import type * as https from 'node:https'
import { createServer as createHttpsServer } from 'node:https'
import { writeFileAtomic } from '../../shared/atomic-file.js'
import type { Config } from '../../shared/config/types.js'
import { defineService } from '../../shared/define-service.js'
import { subscribeIdentity } from '../../shared/identity/announce.js'
import { readIdentity } from '../../shared/identity/identity.js'
import { providerKind } from '../../shared/identity/provider.js'
import { tokenFilePath, tokenSourceFor, ztsClientFor } from '../../shared/identity/runtime.js'
import { parseTargets } from '../../shared/identity/targets.js'
import type { AccessToken, RoleToken, TokenSource } from '../../shared/identity/tokens.js'
import { watchFiles } from '../../shared/identity/watch.js'
import type { ZtsClient } from '../../shared/identity/zts-client.js'
import type { Logger } from '../../shared/logger.js'
import { timerTask } from '../../shared/timer-task.js'
import { createTokenApi } from './api.js'
import { type CacheKey, createTokenCache, describeKey, type TokenCache } from './cache.js'
import { countFetchErrors } from './fetch-metrics.js'
import { registerTokenMetrics, type TokenKind } from './metrics.js'

async function tlsOptions(config: Config) {
  const [cert, key, ca] = await Promise.all([
    readFile(config.tokenServerTlsCertPath),
    readFile(config.tokenServerTlsKeyPath),
    config.tokenServerTlsCaPath ? readFile(config.tokenServerTlsCaPath) : undefined,
  ])
  return { cert, key, ...(ca ? { ca, requestCert: true, rejectUnauthorized: true } : {}) }
}

/** The token caches of the configured TOKEN_TYPE, filled from `source`. */
function createCaches(config: Config, source: TokenSource, signal: AbortSignal) {
  const idleMs = config.tokenCacheIdleEvict
  const types = config.tokenType.split('+') as TokenKind[]
  const roleTokens: TokenCache<RoleToken> | undefined = types.includes('roletoken')
    ? createTokenCache<RoleToken>({
        idleMs,
        fetch: (k) => source.roleToken(k, signal),
        expiresAt: (t) => t.expiryTime * 1000,
        size: (t) => Buffer.byteLength(t.token),
      })
    : undefined
  const accessTokens: TokenCache<AccessToken> | undefined = types.includes('accesstoken')
    ? createTokenCache<AccessToken>({
        idleMs,
        fetch: (k) => source.accessToken({ ...k, expiry: k.maxExpiry }, signal),
        // The fetch time is not kept by ZTS: count from now, which errs on the early side.
        expiresAt: (t) => Date.now() + t.expires_in * 1000,
        size: (t) => Buffer.byteLength(t.access_token),
      })
    : undefined
  return { roleTokens, accessTokens }
}

type Caches = ReturnType<typeof createCaches>

/** Token files of the targets under TOKEN_DIR: `<domain>:role.<role>.<type>`, 0600. */
async function writeTokenFiles(config: Config, caches: Caches, targets: CacheKey[]): Promise<void> {
  if (!config.tokenDir) return
  const ids = new Set(targets.map(describeKey))
  const writes: Promise<void>[] = []
  for (const e of caches.roleTokens?.entries() ?? []) {
    if (ids.has(describeKey(e.key))) {
      const file = tokenFilePath(config, e.key.domain, e.key.role, 'roletoken')
      writes.push(writeFileAtomic(file, e.value.token, 0o600))
    }
  }
  for (const e of caches.accessTokens?.entries() ?? []) {
    if (ids.has(describeKey(e.key))) {
      const file = tokenFilePath(config, e.key.domain, e.key.role, 'accesstoken')
      writes.push(writeFileAtomic(file, e.value.access_token, 0o600))
    }
  }
  await Promise.all(writes)
}

/** Fetches (or refreshes) every target; logs the tally like the original's "Token cache updated". */
async function updateTargets(
  config: Config,
  caches: Caches,
  targets: CacheKey[],
  log: Logger,
  refresh: boolean,
): Promise<boolean> {
  const tally = async (cache: TokenCache<unknown> | undefined) => {
    if (!cache) return { updated: 0, failed: 0 }
    if (refresh) return cache.refreshAll()
    const r = await Promise.allSettled(targets.map((k) => cache.get(k)))
    for (const x of r) if (x.status === 'rejected') log.error({ err: x.reason }, 'token fetch failed')
    const failed = r.filter((x) => x.status === 'rejected').length
    return { updated: r.length - failed, failed }
  }
  const [rt, at] = await Promise.all([tally(caches.roleTokens), tally(caches.accessTokens)])
  let filesOk = true
  await writeTokenFiles(config, caches, targets).catch((err: unknown) => {
    filesOk = false
    log.error({ event: 'token.files.failed', err }, 'writing token files failed')
  })
  log.info(
    { event: 'token.cache.updated', roletoken: rt, accesstoken: at },
    `token cache updated: accesstoken success[${at.updated}] error[${at.failed}]; roletoken success[${rt.updated}] error[${rt.failed}]`,
  )
  return filesOk && rt.failed === 0 && at.failed === 0
}

defineService({
  async start({ config, log, serve, go, registry, signal, onStop }) {
    // ZTS: mutual TLS with the identity the certificate service announces (the files at first).
    let client: ZtsClient | undefined
    if (config.endpoint) {
      const c = await ztsClientFor(config)
      client = c
      onStop(() => c.close())
      c.setIdentity(await readIdentity(config))
      const subscription = subscribeIdentity((id) => {
        c.setIdentity(id)
        log.info({ event: 'token.identity.updated' }, 'using the new service identity for ZTS')
      })
      onStop(() => subscription.close())
    }
    const source = countFetchErrors(
      tokenSourceFor(config, client),
      registry,
      config.tokenType.split('+') as TokenKind[],
    )
    const caches = createCaches(config, source, signal)
    registerTokenMetrics(registry, {
      ...(caches.roleTokens ? { roletoken: caches.roleTokens } : {}),
      ...(caches.accessTokens ? { accesstoken: caches.accessTokens } : {}),
    } as Record<TokenKind, TokenCache<unknown>>)
    const targets: CacheKey[] = parseTargets(config.targetDomainRoles).map((t) => ({
      domain: t.domain,
      role: t.role,
      proxyForPrincipal: '',
      minExpiry: 0,
      maxExpiry: Math.floor(config.tokenExpiry / 1000),
    }))
    for (const k of targets) {
      caches.roleTokens?.pin(k)
      caches.accessTokens?.pin(k)
    }
    await updateTargets(config, caches, targets, log, false)

    const handler = createTokenApi({
      ...caches,
      jwks: source.jwks?.bind(source),
      roleAuthHeader: config.roleAuthHeader,
      restApi: config.tokenServerRestApi,
      proxyForPrincipal: providerKind(config) !== 'local' || config.tokenAllowProxyForPrincipal,
      timeoutMs: config.tokenServerTimeout,
      log,
    })
    const tls = Boolean(config.tokenServerTlsCertPath && config.tokenServerTlsKeyPath)
    const server: Server = tls
      ? (createHttpsServer(await tlsOptions(config), handler) as unknown as Server)
      : createHttpServer(handler)
    server.requestTimeout = config.tokenServerTimeout + 5_000
    await serve('server', server, config.tokenServerAddr)
    if (tls) {
      await go('tls-watcher', async (t) => {
        // The token server's certificate is renewed on disk (often the service certificate itself).
        watchFiles(
          [config.tokenServerTlsCertPath, config.tokenServerTlsKeyPath],
          () =>
            void tlsOptions(config)
              .then((o) => {
                ;(server as unknown as https.Server).setSecureContext(o)
                log.info({ event: 'token.tls.reloaded' }, 'token server certificate reloaded')
              })
              .catch((err: unknown) =>
                log.warn({ err }, 'token server certificate reload failed; keeping the old one'),
              ),
          t.signal,
        )
        await new Promise((r) => t.signal.addEventListener('abort', r, { once: true }))
        return undefined
      })
    }
    log.info(
      { event: 'token.refresh.scheduled', everyMs: config.tokenRefreshInterval },
      `will refresh tokens every ${config.tokenRefreshInterval}ms`,
    )
    const refreshTick = async () => {
      const now = Date.now()
      const evicted = (caches.roleTokens?.evictIdle(now) ?? 0) + (caches.accessTokens?.evictIdle(now) ?? 0)
      if (evicted)
        log.info({ event: 'token.cache.evicted', count: evicted }, `evicted ${evicted} idle tokens`)
      await updateTargets(config, caches, targets, log, true)
    }
    await go(
      'refresh-timer',
      timerTask(
        () => config.tokenRefreshInterval,
        () => refreshTick().catch((err: unknown) => log.error({ err }, 'token refresh failed')),
      ),
    )
  },
})
