import type { Config } from '../../shared/config/types.js'
import { codedError } from '../../shared/errors.js'
import type { Logger } from '../../shared/logger.js'
import type { ThreadLock } from '../../shared/thread-lock.js'
import type { RedisClient } from './redis-client.js'
import type { Sink } from './sink.js'
import { createFileSink } from './sink-file.js'
import { createKubernetesSink } from './sink-kubernetes.js'
import { createRedisStreamSink } from './sink-redis-stream.js'

/** The sink GATEWAY_SINK names, built from its settings. */
export async function createSinkFor(
  config: Config,
  redis: RedisClient | undefined,
  log: Logger,
  opts: {
    /** ServiceContext.successor: the file sink's tail is the predecessor's, still appending. */
    successor?: boolean
    /** A write to Redis that stores nothing lasting (the dedup store's probe). */
    redisWriteProbe?: () => Promise<void>
    /** Shared with the other generation of the gateway while one drains (the file sink). */
    fileLock?: ThreadLock
  } = {},
): Promise<Sink> {
  switch (config.gatewaySink) {
    case 'redis-stream':
      if (!redis) throw codedError('ERR_CONFIG', 'GATEWAY_SINK=redis-stream needs REDIS_URL')
      return createRedisStreamSink(redis, config.gatewayStreamKey, {
        maxLen: config.gatewayStreamMaxlen,
        ...(opts.redisWriteProbe ? { writeProbe: opts.redisWriteProbe } : {}),
      })
    case 'kubernetes':
      return createKubernetesSink({
        api: config.gatewayKubeApi,
        tokenFile: config.gatewayKubeTokenFile,
        caFile: config.gatewayKubeCaFile,
        namespace: config.gatewayKubeNamespace,
        group: config.gatewayKubeGroup,
        version: config.gatewayKubeVersion,
        kind: config.gatewayKubeKind,
        plural: config.gatewayKubePlural,
      })
    default:
      return createFileSink(config.gatewaySinkFile, log, config.gatewaySinkTimeout, {
        repair: !opts.successor,
        ...(opts.fileLock ? { lock: opts.fileLock } : {}),
      })
  }
}
