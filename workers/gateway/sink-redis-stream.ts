import { mapSliced } from '../../shared/slices.js'
import type { RedisClient } from './redis-client.js'
import type { Sink, SinkRecord } from './sink.js'

/**
 * XADD per new alert, one pipeline per batch: consumers scale out behind several gateways. One key,
 * so one hash slot: the pipeline is valid on a cluster too. `writeProbe` is the dedup store's
 * probe, a write to the same Redis. `maxLen` (GATEWAY_STREAM_MAXLEN) bounds the stream, which
 * otherwise grows until Redis is out of memory, and the dedup store, in the same Redis, with it:
 * exact, not `~` (approximate trimming keeps whole nodes of a hundred entries, well past a small
 * bound); at an alert gateway's rate, each XADD trims about one entry.
 */
export function createRedisStreamSink(
  client: RedisClient,
  key: string,
  { maxLen = 0, writeProbe }: { maxLen?: number; writeProbe?: () => Promise<void> } = {},
): Sink {
  const trim = maxLen > 0 ? ['MAXLEN', String(maxLen)] : []
  return {
    name: 'redis-stream',
    async write(records: readonly SinkRecord[], _signal, stored) {
      const p = client.pipeline()
      await mapSliced(records, (r) =>
        p.xadd(
          key,
          ...trim,
          '*',
          'fingerprint',
          r.fingerprint,
          'status',
          r.status,
          'alert',
          JSON.stringify(r),
        ),
      )
      const replies = (await p.exec()) ?? []
      const failed = replies.find(([err]) => err)
      if (failed?.[0]) {
        // What Redis took of a batch that failed part way is said (OOM after 46 of 200): released
        // whole, its retry appended those 46 again. A batch taken whole resolves, as it was.
        if (stored) for (const [i, [err]] of replies.entries()) if (!err) stored(i)
        throw failed[0]
      }
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
      // A Redis that refuses writes (out of memory, a replica after a failover) still answers
      // TYPE: ready again a second after each failed batch, every next one failing.
      await writeProbe?.()
    },
    async close() {}, // the client is shared with the dedup store and closed with it
  }
}
