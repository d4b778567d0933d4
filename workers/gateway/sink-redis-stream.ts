import { mapSliced } from '../../shared/slices.js'
import type { RedisClient } from './redis-client.js'
import type { Sink, SinkRecord } from './sink.js'

/**
 * XADD per new alert, one pipeline per batch: consumers scale out behind several gateways. One key,
 * so one hash slot: the pipeline is valid on a cluster too.
 */
export function createRedisStreamSink(client: RedisClient, key: string): Sink {
  return {
    name: 'redis-stream',
    async write(records: readonly SinkRecord[]) {
      const p = client.pipeline()
      await mapSliced(records, (r) =>
        p.xadd(key, '*', 'fingerprint', r.fingerprint, 'status', r.status, 'alert', JSON.stringify(r)),
      )
      const replies = (await p.exec()) ?? []
      const failed = replies.find(([err]) => err)
      if (failed?.[0]) throw failed[0]
      if (replies.length !== records.length) throw new Error('incomplete reply from redis')
    },
    async probe() {
      // An XADD of nothing is not possible, and one of a probe record would reach the consumers:
      // the connection is up, and the key can take XADD (a key of another type failed every
      // write while the probe said ready a second after each).
      if (client.status !== 'ready') throw new Error(`redis is ${client.status}`)
      // An ACL that grants XADD but not TYPE (least privilege) leaves the connection to go by.
      const type = await client.type(key).catch((err: Error) => {
        // The command refused, not the key (a key the user may not touch fails XADD as well).
        if (/^NOPERM .*'type' command/.test(err.message)) return 'stream'
        throw err
      })
      if (type !== 'stream' && type !== 'none') throw new Error(`${key} holds a ${type}, not a stream`)
    },
    async close() {}, // the client is shared with the dedup store and closed with it
  }
}
