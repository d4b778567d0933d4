import { setTimeout as sleep } from 'node:timers/promises'
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { parseRedisUrl } from '../../shared/config/redis-url.js'
import type { Logger } from '../../shared/logger.js'

const RECONNECT_MAX_MS = 1000
const QUIT_WAIT_MS = 200

/** A standalone or Sentinel-backed client, or a Cluster client: the same commands for the gateway. */
export type RedisClient = Redis | Cluster

export interface RedisClientOptions {
  /** REDIS_URL: redis://, rediss://, redis+sentinel:// or redis+cluster:// (see shared/config/redis-url.ts). */
  url: string
  sentinelPassword: string
  commandTimeoutMs: number
}

/**
 * One client for dedup and the stream sink. Commands never queue while Redis is unreachable
 * (`enableOfflineQueue: false`): a request fails fast with 503 and AlertManager retries, rather
 * than piling up behind a dead connection. The URL (which may carry a password) is never logged.
 */
export function createRedisClient(opts: RedisClientOptions, log: Logger): RedisClient {
  const common = {
    lazyConnect: true,
    // Concurrent requests' commands share one write and one round trip (per node in a cluster).
    enableAutoPipelining: true,
    enableOfflineQueue: false,
  } as const
  const perConnection: RedisOptions = {
    maxRetriesPerRequest: 1,
    commandTimeout: opts.commandTimeoutMs,
    // A command whose reply was lost with its connection has often run: sent again after the
    // reconnect, a check-and-lease would find its own lease and answer "duplicate", and an XADD
    // would append twice. Such a command fails at its timeout instead (503: AlertManager retries,
    // and finds the lease, or after it expires, nothing).
    autoResendUnfulfilledCommands: false,
    // A master demoted to replica (a failover behind a DNS name or a proxy) answers every write
    // READONLY for good on the connection it has: reconnect, to whatever is master now (1:
    // without sending the failed command again, as above).
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 1 : false),
  }
  const retry = (times: number) => Math.min(times * 100, RECONNECT_MAX_MS)
  const target = parseRedisUrl(opts.url)
  let client: RedisClient
  switch (target.mode) {
    case 'standalone':
      client = new Redis(target.url, { ...common, ...perConnection, retryStrategy: retry })
      break
    case 'sentinel':
      client = new Redis({
        ...common,
        ...perConnection,
        retryStrategy: retry,
        sentinels: target.sentinels,
        name: target.name,
        db: target.db,
        username: target.username,
        password: target.password,
        sentinelPassword: opts.sentinelPassword || undefined,
        sentinelRetryStrategy: retry,
        ...(target.tls && { tls: {}, enableTLSForSentinelMode: true, sentinelTLS: {} }),
      })
      break
    case 'cluster':
      client = new Cluster(target.nodes, {
        ...common,
        clusterRetryStrategy: retry,
        // ioredis ends a node's connection rather than reconnecting it, so autoResendUnfulfilledCommands
        // never applies: the Cluster itself sends a command whose reply was lost with it again
        // ("Connection is closed.") after this delay, a check-and-lease then finding its own lease.
        // 0: such a command fails at once (503). MOVED, ASK, TRYAGAIN and CLUSTERDOWN are still
        // retried: a command redirected did not run.
        retryDelayOnFailover: 0,
        redisOptions: {
          ...perConnection,
          username: target.username,
          password: target.password,
          ...(target.tls && { tls: {} }),
        },
      })
      break
  }
  let up = false
  // ioredis selects the URL's database as it connects, and on a refusal (an index past the
  // server's `databases`, an ACL without SELECT) says so only as an 'error' event, then becomes
  // ready in database 0: another tenant's keys, where an alert never stored here would be
  // answered as a duplicate. Such a connection is ended as it becomes ready (before any command
  // of ours is sent) and tried again, not ready meanwhile.
  let selectRefused: Error | undefined
  let saidSelect = false
  // What a connection that ended before it was ready was refused is not the next one's.
  client.on('connect', () => {
    selectRefused = undefined
  })
  client.on('ready', () => {
    if (selectRefused) {
      if (!saidSelect) {
        log.error(
          { event: 'gateway.redis.select.failed', err: { message: selectRefused.message } },
          `redis refused the database of REDIS_URL: ${selectRefused.message}`,
        )
      }
      saidSelect = true
      selectRefused = undefined
      return void client.disconnect(true)
    }
    saidSelect = false
    up = true
    log.info({ event: 'gateway.redis.up', mode: target.mode }, 'redis connected')
  })
  client.on('error', (err: Error & { command?: { name?: string } }) => {
    if (err.command?.name === 'select') selectRefused = err
    // Reconnect attempts repeat the error every few hundred ms: log the transition once.
    if (!up) return log.debug({ err: { message: err.message } }, 'redis still unreachable')
    up = false
    log.warn({ event: 'gateway.redis.down', err: { message: err.message } }, 'redis unreachable')
  })
  client.on('close', () => {
    if (up) log.warn({ event: 'gateway.redis.down' }, 'redis connection closed')
    up = false
  })
  return client
}

/** Connects, but a Redis that is down at start only means 503s until it is back. */
export async function connectRedis(client: RedisClient, waitMs: number, log: Logger): Promise<void> {
  const connected = client.connect().then(
    () => true,
    (err: Error) => {
      log.warn({ event: 'gateway.redis.down', err: { message: err.message } }, 'redis unreachable at start')
      return false
    },
  )
  await Promise.race([connected, sleep(waitMs)])
}

/** QUIT (graceful; every node of a cluster), bounded; an error here is logged and never changes the exit code. */
export async function closeRedis(client: RedisClient, log: Logger): Promise<void> {
  client.removeAllListeners('close') // our own QUIT is not an outage
  try {
    const quit = client.quit()
    const done = await Promise.race([quit.then(() => true), sleep(QUIT_WAIT_MS).then(() => false)])
    if (!done) throw new Error(`no reply to QUIT within ${QUIT_WAIT_MS}ms`)
    log.info({ event: 'gateway.redis.closed' }, 'redis connection closed')
  } catch (err) {
    log.error(
      { event: 'gateway.redis.close.failed', err: { message: (err as Error).message } },
      'closing redis failed',
    )
  } finally {
    client.disconnect()
  }
}
