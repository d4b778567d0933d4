import type { Server } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import { sweepLeftoversAtStart } from '../../shared/atomic-file.js'
import { https } from '../../shared/builtins.js'
import { monotonicMs } from '../../shared/clock.js'
import type { Config } from '../../shared/config/types.js'
import { defineService, type ServiceContext } from '../../shared/define-service.js'
import { readFile } from '../../shared/fs-async.js'
import { createServer as createHttpServer } from '../../shared/http-builtin.js'
import { subscribeIdentity } from '../../shared/identity/announce.js'
import { backoffDelay } from '../../shared/identity/backoff.js'
import { readIdentity } from '../../shared/identity/identity.js'
import { tokenOutputs } from '../../shared/identity/naming.js'
import { providerKind } from '../../shared/identity/provider.js'
import { tokenSourceFor, ztsClientFor } from '../../shared/identity/runtime.js'
import { parseTargets } from '../../shared/identity/targets.js'
import type { AccessToken, RoleToken, TokenSource } from '../../shared/identity/tokens.js'
import { watchFiles } from '../../shared/identity/watch.js'
import type { ZtsClient } from '../../shared/identity/zts-client.js'
import type { Logger } from '../../shared/logger.js'
import { bootDeadline, untilDeadline } from '../../shared/start-deadline.js'
import { timerTask, timerWake } from '../../shared/timer-task.js'
import { createTokenApi, MAX_BODY_BYTES } from './api.js'
import { type CacheKey, createTokenCache, describeKey, type TokenCache } from './cache.js'
import { expiryOf, stampExpiry } from './expiry.js'
import { countFetchErrors } from './fetch-metrics.js'
import { createTokenFiles, type TokenFiles } from './files.js'
import { accessTokenKey, roleTokenKey } from './keys.js'
import { registerTokenMetrics, type TokenKind } from './metrics.js'

async function tlsOptions(config: Config) {
  const [cert, key, ca] = await Promise.all([
    readFile(config.tokenServerTlsCertPath),
    readFile(config.tokenServerTlsKeyPath),
    config.tokenServerTlsCaPath ? readFile(config.tokenServerTlsCaPath) : undefined,
  ])
  return { cert, key, ...(ca ? { ca, requestCert: true, rejectUnauthorized: true } : {}) }
}

/**
 * A TLS handshake is read under the same deadline as headers (Node's default is 120 s). Half-open
 * sockets, as every server's (shared/http-server.ts): without, a client that ended its side once
 * its request was sent got no answer over TLS.
 */
function tlsServerOptions(config: Config, o: Awaited<ReturnType<typeof tlsOptions>>) {
  return { ...o, handshakeTimeout: config.httpHeaderTimeout, allowHalfOpen: true }
}

/** The configured targets, as each cache keys them (keys.ts). */
interface Targets {
  roletoken: CacheKey[]
  accesstoken: CacheKey[]
}

function targetsOf(config: Config): Targets {
  const list = parseTargets(config.targetDomainRoles)
  const expiry = Math.floor(config.tokenExpiry / 1000)
  return {
    roletoken: list.map((t) => roleTokenKey(t.domain, t.role, '', 0, 0, expiry)),
    accesstoken: list.map((t) => accessTokenKey(t.domain, t.role, '', 0, expiry)),
  }
}

/**
 * The token caches of the configured TOKEN_TYPE, filled from `source`. Their fetches are aborted
 * by `stopped` only, once the server has drained: a miss in flight when shutdown begins completes.
 */
function createCaches(config: Config, source: TokenSource, targets: Targets, stopped: AbortSignal) {
  const bounds = {
    idleMs: config.tokenCacheIdleEvict,
    maxEntries: config.tokenCacheMaxEntries,
    maxBytes: config.tokenCacheMaxBytes,
    signal: stopped,
  }
  const types = config.tokenType.split('+') as TokenKind[]
  const roleTokens: TokenCache<RoleToken> | undefined = types.includes('roletoken')
    ? createTokenCache<RoleToken>({
        ...bounds,
        targets: targets.roletoken,
        fetch: (k, signal) => source.roleToken(k, signal),
        expiresAt: (t) => t.expiryTime * 1000,
        size: (t) => Buffer.byteLength(t.token),
      })
    : undefined
  const accessTokens: TokenCache<AccessToken> | undefined = types.includes('accesstoken')
    ? createTokenCache<AccessToken>({
        ...bounds,
        targets: targets.accesstoken,
        fetch(k, signal) {
          // Its lifetime counts from before the request: on the early side, never past its end.
          const asked = Date.now()
          return source.accessToken({ ...k, expiry: k.maxExpiry }, signal).then((t) => stampExpiry(t, asked))
        },
        expiresAt: expiryOf,
        size: (t) => Buffer.byteLength(t.access_token),
      })
    : undefined
  return { roleTokens, accessTokens }
}

type Caches = ReturnType<typeof createCaches>

/** Whether a pass fetched every token it asked for, and wrote the token files. */
interface PassResult {
  fetched: boolean
  filesWritten: boolean
}

/** What one pass fetches: every target at boot; at a refresh, what is worth re-fetching. */
type Pass = (
  | { kind: 'boot'; signal: AbortSignal }
  | { kind: 'refresh'; usedSince: number; signal: AbortSignal }
) & {
  /** When the write of the files stops being waited for, if not with the fetches. */
  filesSignal?: AbortSignal
}

/** Fetches the targets (boot) or refreshes the cache; logs the tally like the original's "Token cache updated". */
async function updateTokens(
  config: Config,
  caches: Caches,
  targets: Targets,
  files: TokenFiles,
  log: Logger,
  pass: Pass,
): Promise<PassResult> {
  // A refresh may fail for thousands of keys at once (ZTS down): the first failure says why.
  let firstFailure: { key: CacheKey; err: unknown } | undefined
  const tally = async (cache: TokenCache<unknown> | undefined, keys: CacheKey[]) => {
    if (!cache) return { updated: 0, failed: 0, skipped: 0 }
    if (pass.kind === 'refresh') {
      // A token fetched within the last half interval is fresh enough: it is not fetched again.
      const fetchedBefore = Date.now() - config.tokenRefreshInterval / 2
      return cache.refresh({
        usedSince: pass.usedSince,
        fetchedBefore,
        signal: pass.signal,
        onError(key, err) {
          firstFailure ??= { key, err }
        },
      })
    }
    const r = await Promise.allSettled(keys.map((k) => cache.get(k, pass.signal)))
    for (const x of r) if (x.status === 'rejected') log.error({ err: x.reason }, 'token fetch failed')
    const failed = r.filter((x) => x.status === 'rejected').length
    return { updated: r.length - failed, failed, skipped: 0 }
  }
  const [rt, at] = await Promise.all([
    tally(caches.roleTokens, targets.roletoken),
    tally(caches.accessTokens, targets.accesstoken),
  ])
  if (firstFailure) {
    const failed = rt.failed + at.failed
    log.error(
      { event: 'token.refresh.failed', failed, key: describeKey(firstFailure.key), err: firstFailure.err },
      `token refresh: ${failed} fetch(es) failed; the first, ${describeKey(firstFailure.key)}: ${(firstFailure.err as Error).message}`,
    )
  }
  const filesWritten = await files.write(pass.filesSignal ?? pass.signal)
  log.info(
    { event: 'token.cache.updated', roletoken: rt, accesstoken: at },
    `token cache updated: accesstoken success[${at.updated}] error[${at.failed}]; roletoken success[${rt.updated}] error[${rt.failed}]`,
  )
  return { fetched: rt.failed === 0 && at.failed === 0, filesWritten }
}

/** The token server: the SIA token API over HTTP, or HTTPS with its certificate reloaded from disk. */
async function serveTokens(
  config: Config,
  caches: Caches,
  source: TokenSource,
  { serve, go, log, repeats }: Pick<ServiceContext, 'serve' | 'go' | 'log' | 'repeats'>,
): Promise<void> {
  const api = createTokenApi({
    ...caches,
    jwks: source.jwks?.bind(source),
    roleAuthHeader: config.roleAuthHeader,
    restApi: config.tokenServerRestApi,
    proxyForPrincipal: providerKind(config) !== 'local' || config.tokenAllowProxyForPrincipal,
    defaultExpirySec: Math.floor(config.tokenExpiry / 1000),
    timeoutMs: config.tokenServerTimeout,
    log,
    repeats,
  })
  const tls = Boolean(config.tokenServerTlsCertPath && config.tokenServerTlsKeyPath)
  const server: Server = tls
    ? (https().createServer(
        tlsServerOptions(config, await tlsOptions(config)),
        api.handle,
      ) as unknown as Server)
    : createHttpServer(api.handle)
  await serve('server', server, config.tokenServerAddr, { heldBodyBytes: MAX_BODY_BYTES })
  if (tls) {
    await go('tls-watcher', async (t) => {
      // The token server's certificate is renewed on disk (often the service certificate itself).
      watchFiles(
        [config.tokenServerTlsCertPath, config.tokenServerTlsKeyPath],
        () =>
          void tlsOptions(config)
            .then((o) => {
              ;(server as unknown as HttpsServer).setSecureContext(o)
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
}

/** The first retry of a refresh pass that failed, as SIA's (then doubling). */
const RETRY_INITIAL_MS = 5_000

/**
 * How often idle tokens are looked for: a quarter of TOKEN_CACHE_IDLE_EVICT, between a second and
 * a minute (a token goes at most a quarter late); with eviction off, tokens past their time are
 * still purged once a minute.
 */
function evictionPeriod(idleMs: number): number {
  return idleMs > 0 ? Math.min(60_000, Math.max(1_000, idleMs / 4)) : 60_000
}

defineService({
  async start(ctx) {
    const { config, log, go, registry, signal, onStop, connect, failpoint } = ctx
    const startEnds = monotonicMs() + config.services.token.startTimeout
    const bootEnds = bootDeadline(config.services.token.startTimeout)
    // What a write this thread's predecessor did not finish left beside the token files.
    await sweepLeftoversAtStart(tokenOutputs(config), log, 'token.leftovers.removed')
    // ZTS: mutual TLS with the certificate service's identity: asked for over its port at start,
    // then each new one as it announces it. Without a certificate service, the files are it.
    let client: ZtsClient | undefined
    if (config.endpoint) {
      const c = await ztsClientFor(config)
      client = c
      onStop(() => c.close())
      // Subscribed first, so no announcement falls between the answer and the subscription;
      // an announcement that arrives before the answer is the newer of the two.
      let announced = false
      const subscription = subscribeIdentity((id) => {
        announced = true
        c.setIdentity(id)
        log.info({ event: 'token.identity.updated' }, 'using the new service identity for ZTS')
      })
      const current = config.services.certificate.enabled
        ? await connect('certificate', { waitForUp: true })
            .identity()
            .catch((err: unknown) => {
              log.warn(
                { event: 'token.identity.unavailable', err },
                'no identity yet; waiting for its announcement',
              )
              return undefined
            })
        : await readIdentity(config)
      if (!announced) c.setIdentity(current)
      onStop(() => subscription.close())
    }
    const targets = targetsOf(config)
    const source = countFetchErrors(
      tokenSourceFor(config, client),
      registry,
      config.tokenType.split('+') as TokenKind[],
      {
        roletoken: targets.roletoken,
        accesstoken: targets.accesstoken.map((k) => ({ ...k, expiry: k.maxExpiry })),
      },
    )
    // Registered after the ZTS client's close, so it runs before it: fetches still going once the
    // server has drained (a refresh's, a client's gone) are aborted, then the client closes.
    const stop = new AbortController()
    onStop(() => stop.abort())
    const caches = createCaches(config, source, targets, stop.signal)
    const files = createTokenFiles({
      config,
      caches,
      targets,
      log,
      registry,
      stopping: signal,
      beforeWrite: () => failpoint('token.before-write'),
    })
    registerTokenMetrics(
      registry,
      {
        ...(caches.roleTokens ? { roletoken: caches.roleTokens } : {}),
        ...(caches.accessTokens ? { accesstoken: caches.accessTokens } : {}),
      } as Record<TokenKind, TokenCache<unknown>>,
      {
        ...(config.namespace ? { k8s_namespace: config.namespace } : {}),
        ...(config.podName ? { k8s_pod: config.podName } : {}),
      },
    )
    // The targets' first fetch ends before the start's deadline: a provider that hangs leaves
    // them failed (and retried with back-off, below), not the start timed out.
    const boot = await updateTokens(config, caches, targets, files, log, {
      kind: 'boot',
      signal: untilDeadline(signal, bootEnds),
      // The files of what was fetched are written even when a fetch met the boot's deadline, in
      // half of what the start has left after it.
      filesSignal: untilDeadline(signal, (bootEnds + startEnds) / 2),
    })
    // Keys used since the last refresh that succeeded began are worth refreshing (with the
    // targets). A pass with a failure is retried on SIA's back-off schedule (5 s, doubling,
    // capped at a quarter of the interval), not a whole interval later: a token left to expire
    // over a blip of the provider would break its clients.
    // Only the files failed (a full or read-only volume): the retry writes them again, and fetches
    // nothing until the interval is up (every target was fetched anew at each back-off).
    let lastRefresh = Date.now()
    // The same moment on the monotonic clock, for the schedule: a wall-clock step back must not
    // put the next refresh off by as much (shared/clock.ts).
    let lastFetchAt = monotonicMs()
    let failedPasses = boot.fetched && boot.filesWritten ? 0 : 1
    let filesOwed = boot.fetched && !boot.filesWritten
    // The local authority changed: a pass that fetches every target is owed now, whatever is due.
    let forced = false
    const interval = config.tokenRefreshInterval
    const retryMaxMs = Math.max(RETRY_INITIAL_MS, interval / 4)
    // When the pass after the last one is due: at once when forced; an interval after the last
    // fetch (not after a retry that wrote only the files), or, after a failure, SIA's back-off
    // (drawn once: it is jittered); never with no interval.
    const nextRefreshAt = () =>
      forced
        ? monotonicMs()
        : interval <= 0
          ? Number.POSITIVE_INFINITY
          : failedPasses
            ? monotonicMs() + Math.min(interval, backoffDelay(failedPasses - 1, RETRY_INITIAL_MS, retryMaxMs))
            : lastFetchAt + interval
    let refreshAt = nextRefreshAt()
    const wake = timerWake()
    // The local authority made anew (deleted or broken on disk): what it signed before verifies
    // against no key of the JWKS now, yet was served from the cache for up to its lifetime. Every
    // cached token is dropped at once; the targets are fetched, and their files written, again by
    // a pass of the refresh timer, where every pass runs: its failures are retried as any pass's
    // (run beside the timer, a write that failed was never retried), and it never meets a pass
    // under way (whose write, of tokens gathered before the clear, found the slot busy and was
    // dropped unsaid: the files kept the old key's tokens for an interval).
    source.onSignerChange?.(() => {
      caches.roleTokens?.clear()
      caches.accessTokens?.clear()
      log.warn(
        { event: 'token.cache.cleared', reason: 'authority' },
        'the local authority changed: cached tokens dropped, the targets fetched again',
      )
      forced = true
      refreshAt = nextRefreshAt()
      wake.wake()
    })

    // No token server (TOKEN_SERVER_ADDR empty, or USE_TOKEN_SERVER=false): the target token files
    // alone, written and refreshed as with one.
    if (config.tokenServerAddr !== '') await serveTokens(config, caches, source, ctx)
    else log.info({ event: 'token.files.only' }, 'no token server: writing the token files only')
    log.info(
      { event: 'token.refresh.scheduled', everyMs: config.tokenRefreshInterval },
      `will refresh tokens every ${config.tokenRefreshInterval}ms`,
    )
    // Idle and expired tokens are dropped on a schedule of their own, in the same task: only at a
    // refresh, TOKEN_REFRESH_INTERVAL=0 kept them for ever (counted, exported) and the 30-minute
    // default made a TOKEN_CACHE_IDLE_EVICT of 5 minutes one of 30.
    const evictEveryMs = evictionPeriod(config.tokenCacheIdleEvict)
    let evictAt = monotonicMs() + evictEveryMs
    const evict = () => {
      const now = Date.now()
      const evicted = (caches.roleTokens?.evictIdle(now) ?? 0) + (caches.accessTokens?.evictIdle(now) ?? 0)
      if (evicted)
        log.info({ event: 'token.cache.evicted', count: evicted }, `evicted ${evicted} idle tokens`)
    }
    const refreshPass = async (tickSignal: AbortSignal) => {
      const now = Date.now()
      const at = monotonicMs()
      let r: PassResult
      if (filesOwed && !forced && at - lastFetchAt < interval) {
        r = { fetched: true, filesWritten: await files.write(tickSignal) }
      } else {
        forced = false
        const pass = { kind: 'refresh', usedSince: lastRefresh, signal: tickSignal } as const
        r = await updateTokens(config, caches, targets, files, log, pass).catch((err: unknown) => {
          log.error({ err }, 'token refresh failed')
          return { fetched: false, filesWritten: false }
        })
        if (r.fetched) {
          lastRefresh = now
          lastFetchAt = at
        }
      }
      filesOwed = r.fetched && !r.filesWritten
      failedPasses = r.fetched && r.filesWritten ? 0 : failedPasses + 1
      refreshAt = nextRefreshAt()
    }
    await go(
      'refresh-timer',
      timerTask(
        () => Math.max(1, Math.min(refreshAt, evictAt) - monotonicMs()),
        async (tickSignal) => {
          const at = monotonicMs()
          if (at >= evictAt) {
            evict()
            evictAt = at + evictEveryMs
          }
          if (at >= refreshAt) await refreshPass(tickSignal)
        },
        wake,
      ),
    )
  },
})
