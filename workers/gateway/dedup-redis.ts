import { type DedupEntry, type DedupResult, type DedupStore, storeUnavailable } from './dedup-store.js'
import type { RedisClient } from './redis-client.js'

export const DEDUP_KEY_PREFIX = 'sia:gateway:dedup:'

/**
 * KEYS[1] the fingerprint's hash; ARGV status, now (ms), ttl (ms), id of the recording request.
 * Same status within the TTL: a duplicate, counted. Otherwise (absent, expired, or the status
 * changed): new, owned by `id`. Every arrival slides the TTL.
 */
const RECORD_LUA = `
local cur = redis.call('HMGET', KEYS[1], 'status', 'first')
if cur[1] == ARGV[1] then
  local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
  redis.call('HSET', KEYS[1], 'last', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {0, count, cur[2], ARGV[2]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'count', 1, 'first', ARGV[2], 'last', ARGV[2], 'id', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, 1, ARGV[2], ARGV[2]}
`

/** Deletes the record only if the request `ARGV[1]` created it (never someone else's). */
const ROLLBACK_LUA = `
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`

interface ScriptCommands {
  dedupRecord(key: string, status: string, now: number, ttl: number, id: string): Promise<Reply>
  dedupRollback(key: string, id: string): Promise<number>
}

type Reply = [number, number, string, string]

/**
 * Check-and-record: one atomic Lua call per alert, all issued at once, in order. The client's
 * auto-pipelining sends them in one write and one round trip (per node of a cluster: an explicit
 * pipeline would have to stay in one hash slot, the fingerprints of a batch do not). Calls on one
 * key go to one node over one connection, so their order holds.
 */
export function createRedisStore(client: RedisClient, ttlMs: number): DedupStore {
  client.defineCommand('dedupRecord', { numberOfKeys: 1, lua: RECORD_LUA })
  client.defineCommand('dedupRollback', { numberOfKeys: 1, lua: ROLLBACK_LUA })
  const cmds = client as unknown as ScriptCommands

  const rollback = async (fingerprints: readonly string[], id: string) => {
    const done = await Promise.allSettled(
      fingerprints.map((fp) => cmds.dedupRollback(DEDUP_KEY_PREFIX + fp, id)),
    )
    for (const d of done)
      if (d.status === 'rejected') throw storeUnavailable(errorOf(d.reason).message, d.reason)
  }

  return {
    kind: 'redis',
    up: () => client.status === 'ready',
    rollback,
    async record(entries: readonly DedupEntry[], id: string, now: number): Promise<DedupResult[]> {
      if (client.status !== 'ready') throw storeUnavailable(`redis is ${client.status}`)
      const replies = await Promise.allSettled(
        entries.map((e) => cmds.dedupRecord(DEDUP_KEY_PREFIX + e.fingerprint, e.status, now, ttlMs, id)),
      )
      const failed = replies.find((r) => r.status === 'rejected')
      if (failed) {
        // Whatever did get recorded as new must not turn AlertManager's retry into a duplicate.
        const recorded = entries.filter((_, i) => {
          const r = replies[i]
          return r?.status === 'fulfilled' && r.value[0] === 1
        })
        await rollback(
          recorded.map((e) => e.fingerprint),
          id,
        ).catch(() => {})
        throw storeUnavailable(errorOf(failed.reason).message, failed.reason)
      }
      return replies.map((r) => {
        const [isNew, count, first, last] = (r as PromiseFulfilledResult<Reply>).value
        return { isNew: isNew === 1, count, firstSeen: Number(first), lastSeen: Number(last) }
      })
    },
  }
}

function errorOf(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason))
}
