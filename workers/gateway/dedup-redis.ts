import type { Redis } from 'ioredis'
import { type DedupEntry, type DedupResult, type DedupStore, storeUnavailable } from './dedup-store.js'

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
  dedupRecord(key: string, status: string, now: number, ttl: number, id: string): unknown
  dedupRollback(key: string, id: string): unknown
}

type Reply = [number, number, string, string]

/** Check-and-record in one round trip per batch: a pipeline of atomic Lua calls, in order. */
export function createRedisStore(client: Redis, ttlMs: number): DedupStore {
  client.defineCommand('dedupRecord', { numberOfKeys: 1, lua: RECORD_LUA })
  client.defineCommand('dedupRollback', { numberOfKeys: 1, lua: ROLLBACK_LUA })

  const rollback = async (fingerprints: readonly string[], id: string) => {
    if (fingerprints.length === 0) return
    const p = client.pipeline()
    const cmds = p as unknown as ScriptCommands
    for (const fp of fingerprints) cmds.dedupRollback(DEDUP_KEY_PREFIX + fp, id)
    for (const [err] of (await p.exec()) ?? []) if (err) throw storeUnavailable(err.message, err)
  }

  return {
    kind: 'redis',
    up: () => client.status === 'ready',
    rollback,
    async record(entries: readonly DedupEntry[], id: string, now: number): Promise<DedupResult[]> {
      if (client.status !== 'ready') throw storeUnavailable(`redis is ${client.status}`)
      const p = client.pipeline()
      const cmds = p as unknown as ScriptCommands
      for (const e of entries) cmds.dedupRecord(DEDUP_KEY_PREFIX + e.fingerprint, e.status, now, ttlMs, id)
      let replies: [Error | null, unknown][]
      try {
        replies = (await p.exec()) ?? []
      } catch (err) {
        throw storeUnavailable((err as Error).message, err)
      }
      const failed = replies.find(([err]) => err)
      if (failed || replies.length !== entries.length) {
        // Whatever did get recorded as new must not turn AlertManager's retry into a duplicate.
        const recorded = entries.filter((_, i) => (replies[i]?.[1] as Reply | undefined)?.[0] === 1)
        await rollback(
          recorded.map((e) => e.fingerprint),
          id,
        ).catch(() => {})
        throw storeUnavailable(failed?.[0]?.message ?? 'incomplete reply from redis', failed?.[0])
      }
      return replies.map(([, reply]) => {
        const [isNew, count, first, last] = reply as Reply
        return { isNew: isNew === 1, count, firstSeen: Number(first), lastSeen: Number(last) }
      })
    },
  }
}
