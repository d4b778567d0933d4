import { defineService } from '../../shared/define-service.js'
import { requireFromDist } from '../../shared/dist-url.js'
import { createBodyBudget } from '../../shared/http/body-budget.js'
import { createServer } from '../../shared/http-builtin.js'
import { readiness } from '../../shared/readiness.js'
import { createMemoryStore } from './dedup-memory.js'
import { createRedisStore } from './dedup-redis.js'
import type { DedupStore } from './dedup-store.js'
import { createHandler } from './handler.js'
import { createGatewayHealth } from './health.js'
import { createMetrics } from './metrics.js'
import type { RedisClient } from './redis-client.js'
import { createSinkFor } from './sinks.js'

/** How long start() waits for Redis; a Redis that is down only means 503s until it returns. */
const REDIS_START_WAIT_MS = 2000
/** Longest wait for an alert another request is writing (normally milliseconds) before a 503. */
const PENDING_WAIT_MS = 2000

/**
 * The AlertManager webhook gateway (DESIGN.md §7): dedup by fingerprint, every new alert to the
 * sink before the answer. Shutdown drains in-flight requests (dedup and sink writes included)
 * through serve(), then the commits that outlived their answers; only then are the sink and then
 * Redis closed (onStop runs in reverse order).
 */
/**
 * ioredis costs ~12 MiB of heap once loaded, and its source is 40% of what this thread would parse
 * at boot: it comes from a CommonJS bundle of its own (scripts/bundle.mjs), required by path only
 * when Redis is configured, so the gateway's bundle does not hold it. `node:module` (and the
 * source-map support it loads) is taken then too, not by every gateway at boot.
 */
const loadRedisClient = () =>
  requireFromDist<typeof import('./redis-client.js')>('workers/gateway/redis-client.cjs')

defineService({
  async start({
    service,
    config,
    successor,
    log,
    repeats,
    registry,
    board,
    serve,
    onStop,
    failpoint,
    signal,
  }) {
    let redis: RedisClient | undefined
    if (config.redisUrl) {
      const client = loadRedisClient()
      const r = client.createRedisClient(
        {
          url: config.redisUrl,
          sentinelPassword: config.redisSentinelPassword,
          commandTimeoutMs: config.gatewayDedupTimeout,
        },
        log,
      )
      redis = r
      onStop(() => client.closeRedis(r, log))
      await client.connectRedis(
        r,
        Math.min(REDIS_START_WAIT_MS, config.services.gateway.startTimeout / 2),
        log,
      )
    }
    const leaseMs = config.gatewayDedupLease
    const store: DedupStore = redis
      ? createRedisStore(redis, config.gatewayDedupTtl, leaseMs, log)
      : createMemoryStore({
          ttlMs: config.gatewayDedupTtl,
          leaseMs,
          maxEntries: config.gatewayDedupMaxEntries,
        })
    const sink = await createSinkFor(config, redis, log, {
      successor,
      ...(store.probe ? { redisWriteProbe: store.probe.bind(store) } : {}),
      fileLock: board.sinkLock(),
    })
    onStop(({ deadline }) => sink.close(deadline))
    // Readiness follows the store and the sink, from now until shutdown begins (then a replacement
    // worker, or the shutdown itself, says what readiness is).
    const health = createGatewayHealth({
      store,
      sink,
      log,
      publish: (reasons) => board.setDegraded(service, reasons),
    })
    signal.addEventListener('abort', () => health.stop(), { once: true })
    onStop(() => health.stop())
    // Commits still running after their answers; onStop runs in reverse, so this is awaited before
    // the sink and Redis close (each commit is bounded by the command timeout).
    const commits = new Set<Promise<void>>()
    onStop(async () => {
      await Promise.all(commits)
    })
    const budget = createBodyBudget(config.gatewayMaxBufferedBytes)
    const metrics = createMetrics(registry, health, budget, sink.name)
    const server = createServer(
      createHandler({
        maxBodyBytes: config.gatewayMaxBodyBytes,
        maxInflight: config.gatewayMaxInflight,
        budget,
        authToken: config.gatewayAuthToken,
        fingerprintLabels: config.gatewayFingerprintLabels,
        recordResolved: config.gatewayRecordResolved,
        store,
        sink,
        metrics,
        log,
        repeats,
        pendingWaitMs: Math.min(leaseMs, PENDING_WAIT_MS),
        sinkTimeoutMs: config.gatewaySinkTimeout,
        failpoint,
        onSinkWrite: (ok) => (ok ? health.sinkSucceeded() : health.sinkFailed()),
        onStoreCall: (ok) => (ok ? health.storeSucceeded() : health.storeFailed()),
        background(work) {
          commits.add(work)
          void work.then(() => commits.delete(work))
        },
        ready() {
          const r = readiness(board, config)
          const status = r.ready ? 'ready' : 'not ready'
          return { ready: r.ready, body: { status, phase: r.phase, notReady: r.notReady } }
        },
      }),
    )
    // A request expecting `100 Continue` is routed as any other; the handler sends the 100 once
    // the checks that need no body have passed (handler.ts).
    server.on('checkContinue', (req, res) => server.emit('request', req, res))
    const { port } = await serve('server', server, config.gatewayAddr, { behindService: true })
    log.info(
      { event: 'gateway.ready', port, store: store.kind, sink: sink.name },
      `accepting alerts (${store.kind} dedup, ${sink.name} sink)`,
    )
  },
})
