import { mapSliced } from '../../shared/slices.js'
import {
  type DedupEntry,
  type DedupResult,
  type DedupState,
  type DedupStore,
  storeUnavailable,
} from './dedup-store.js'
import type { RedisClient } from './redis-client.js'

export const DEDUP_KEY_PREFIX = 'sia:gateway:dedup:'

/**
 * KEYS[1] the fingerprint's hash; ARGV status, now (ms), ttl (ms), owner (the request), lease (ms).
 * Fields: status, count, first, last, id (owner), pending ("1" while the owner writes the sink).
 * - a pending record of another owner is a live lease (an expired one has expired with its key):
 *   answered `pending` (2), untouched;
 * - same status (committed, or this owner's own pending record, a repeat inside the batch): a
 *   duplicate, counted (0); a committed record's TTL slides;
 * - otherwise (absent, expired, the status changed): new (1), a pending lease of `owner` that
 *   expires after `lease` unless committed.
 * Records of older versions carry no `pending` field: committed.
 */
const RECORD_LUA = `
local cur = redis.call('HMGET', KEYS[1], 'status', 'first', 'id', 'pending', 'count', 'last')
if cur[4] == '1' and cur[3] ~= ARGV[4] then
  return {2, tonumber(cur[5]) or 0, cur[2] or '0', cur[6] or '0'}
end
if cur[1] == ARGV[1] then
  local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
  redis.call('HSET', KEYS[1], 'last', ARGV[2])
  if cur[4] ~= '1' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
  return {0, count, cur[2], ARGV[2]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'count', 1, 'first', ARGV[2], 'last', ARGV[2], 'id', ARGV[4], 'pending', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, 1, ARGV[2], ARGV[2]}
`

/**
 * KEYS[1]; ARGV owner, ttl (ms), status, now (ms). The owner's lease becomes a committed record
 * that lives the TTL (1). A lease that expired unclaimed is recorded anew, committed (1). A record
 * someone else holds is left alone (0): our lease ran out while we wrote.
 */
const COMMIT_LUA = `
local cur = redis.call('HMGET', KEYS[1], 'id', 'pending')
if cur[1] == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'pending')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur[1] then
  redis.call('HSET', KEYS[1], 'status', ARGV[3], 'count', 1, 'first', ARGV[4], 'last', ARGV[4], 'id', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`

/** Deletes the record only if it is a pending lease of `ARGV[1]` (never someone else's). */
const RELEASE_LUA = `
local cur = redis.call('HMGET', KEYS[1], 'id', 'pending')
if cur[1] == ARGV[1] and cur[2] == '1' then
  return redis.call('DEL', KEYS[1])
end
return 0
`

/**
 * The same three scripts over a whole batch, for one Redis (standalone or behind Sentinel): one
 * command for the batch instead of one per alert, run atomically, in the batch's order. A cluster
 * keeps one call per alert, since a script's keys must share a hash slot.
 * RECORD: ARGV now, ttl, owner, lease, then each key's status; the replies of RECORD_LUA, flat.
 */
const RECORD_BATCH_LUA = `
local out = {}
for i, key in ipairs(KEYS) do
  local status = ARGV[4 + i]
  local cur = redis.call('HMGET', key, 'status', 'first', 'id', 'pending', 'count', 'last')
  if cur[4] == '1' and cur[3] ~= ARGV[3] then
    out[#out + 1] = 2
    out[#out + 1] = tonumber(cur[5]) or 0
    out[#out + 1] = cur[2] or '0'
    out[#out + 1] = cur[6] or '0'
  elseif cur[1] == status then
    local count = redis.call('HINCRBY', key, 'count', 1)
    redis.call('HSET', key, 'last', ARGV[1])
    if cur[4] ~= '1' then redis.call('PEXPIRE', key, ARGV[2]) end
    out[#out + 1] = 0
    out[#out + 1] = count
    out[#out + 1] = cur[2] or '0'
    out[#out + 1] = ARGV[1]
  else
    redis.call('DEL', key)
    redis.call('HSET', key, 'status', status, 'count', 1, 'first', ARGV[1], 'last', ARGV[1], 'id', ARGV[3], 'pending', '1')
    redis.call('PEXPIRE', key, ARGV[4])
    out[#out + 1] = 1
    out[#out + 1] = 1
    out[#out + 1] = ARGV[1]
    out[#out + 1] = ARGV[1]
  end
end
return out
`

/** COMMIT over a batch: ARGV owner, ttl, now, then each key's status; COMMIT_LUA's reply per key. */
const COMMIT_BATCH_LUA = `
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('HMGET', key, 'id', 'pending')
  if cur[1] == ARGV[1] then
    redis.call('HDEL', key, 'pending')
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  elseif not cur[1] then
    redis.call('HSET', key, 'status', ARGV[3 + i], 'count', 1, 'first', ARGV[3], 'last', ARGV[3], 'id', ARGV[1])
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
`

/** RELEASE over a batch: ARGV owner; how many leases were deleted. */
const RELEASE_BATCH_LUA = `
local n = 0
for _, key in ipairs(KEYS) do
  local cur = redis.call('HMGET', key, 'id', 'pending')
  if cur[1] == ARGV[1] and cur[2] == '1' then n = n + redis.call('DEL', key) end
end
return n
`

interface ScriptCommands {
  dedupRecord(
    key: string,
    status: string,
    now: number,
    ttl: number,
    owner: string,
    lease: number,
  ): Promise<Reply>
  dedupCommit(key: string, owner: string, ttl: number, status: string, now: number): Promise<number>
  dedupRelease(key: string, owner: string): Promise<number>
  dedupRecordBatch(n: number, ...keysThenArgs: (string | number)[]): Promise<(number | string)[]>
  dedupCommitBatch(n: number, ...keysThenArgs: (string | number)[]): Promise<number[]>
  dedupReleaseBatch(n: number, ...keysThenArgs: (string | number)[]): Promise<number>
}

type Reply = [number, number, string, string]

const STATES: readonly DedupState[] = ['duplicate', 'new', 'pending']

/**
 * Check-and-lease: on one Redis, one atomic Lua call for the whole batch; on a cluster, one per
 * alert, all issued at once, in order, which the client's auto-pipelining sends in one write and
 * one round trip per node (a script's keys, like an explicit pipeline, must stay in one hash slot;
 * the fingerprints of a batch do not). Calls on one key go to one node over one connection, so
 * their order holds. The commit after the sink write is a second round trip of the same kind.
 * Lease expiry is Redis's own PEXPIRE: no clock skew between replicas matters.
 */
/**
 * Issues one call per entry, in slices (a large batch's thousands of commands would hold the loop
 * while they are encoded): every call is still sent before any reply is awaited, so the batch
 * stays one pipelined round trip. Each call is settled as soon as it is made, so one that fails
 * while later slices are being issued is never an unhandled rejection.
 */
async function callAll<E, T>(
  entries: readonly E[],
  call: (e: E) => Promise<T>,
): Promise<PromiseSettledResult<T>[]> {
  const settled = await mapSliced(entries, (e) =>
    call(e).then(
      (value): PromiseSettledResult<T> => ({ status: 'fulfilled', value }),
      (reason: unknown): PromiseSettledResult<T> => ({ status: 'rejected', reason }),
    ),
  )
  return Promise.all(settled)
}

export function createRedisStore(client: RedisClient, ttlMs: number, leaseMs: number): DedupStore {
  client.defineCommand('dedupRecord', { numberOfKeys: 1, lua: RECORD_LUA })
  client.defineCommand('dedupCommit', { numberOfKeys: 1, lua: COMMIT_LUA })
  client.defineCommand('dedupRelease', { numberOfKeys: 1, lua: RELEASE_LUA })
  // No numberOfKeys: the key count is the first argument of each call.
  client.defineCommand('dedupRecordBatch', { lua: RECORD_BATCH_LUA })
  client.defineCommand('dedupCommitBatch', { lua: COMMIT_BATCH_LUA })
  client.defineCommand('dedupReleaseBatch', { lua: RELEASE_BATCH_LUA })
  const cmds = client as unknown as ScriptCommands
  const batched = !client.isCluster
  const keys = (fingerprints: readonly string[]) => fingerprints.map((fp) => DEDUP_KEY_PREFIX + fp)

  const release = async (fingerprints: readonly string[], owner: string) => {
    if (fingerprints.length === 0) return
    if (batched) {
      await cmds
        .dedupReleaseBatch(fingerprints.length, ...keys(fingerprints), owner)
        .catch((err: unknown) => {
          throw storeUnavailable(errorOf(err).message, err)
        })
      return
    }
    const done = await callAll(fingerprints, (fp) => cmds.dedupRelease(DEDUP_KEY_PREFIX + fp, owner))
    for (const d of done)
      if (d.status === 'rejected') throw storeUnavailable(errorOf(d.reason).message, d.reason)
  }

  /** One command for the batch; replies as the per-alert calls would settle. */
  const recordBatch = async (
    entries: readonly DedupEntry[],
    owner: string,
    now: number,
  ): Promise<PromiseSettledResult<Reply>[]> => {
    try {
      const flat = await cmds.dedupRecordBatch(
        entries.length,
        ...keys(entries.map((e) => e.fingerprint)),
        now,
        ttlMs,
        owner,
        leaseMs,
        ...entries.map((e) => e.status),
      )
      return entries.map((_, i) => ({
        status: 'fulfilled',
        value: [
          Number(flat[4 * i]),
          Number(flat[4 * i + 1]),
          String(flat[4 * i + 2]),
          String(flat[4 * i + 3]),
        ],
      }))
    } catch (reason) {
      // Atomic: nothing of the batch was leased.
      return entries.map(() => ({ status: 'rejected', reason }))
    }
  }

  return {
    kind: 'redis',
    up: () => client.status === 'ready',
    release,
    async record(entries: readonly DedupEntry[], owner: string, now: number): Promise<DedupResult[]> {
      if (client.status !== 'ready') throw storeUnavailable(`redis is ${client.status}`)
      if (entries.length === 0) return []
      const replies = batched
        ? await recordBatch(entries, owner, now)
        : await callAll(entries, (e) =>
            cmds.dedupRecord(DEDUP_KEY_PREFIX + e.fingerprint, e.status, now, ttlMs, owner, leaseMs),
          )
      const failed = replies.find((r) => r.status === 'rejected')
      if (failed) {
        // Whatever did get leased must not hold AlertManager's retry off until the lease expires.
        const leased = entries.filter((_, i) => {
          const r = replies[i]
          return r?.status === 'fulfilled' && r.value[0] === 1
        })
        await release(
          leased.map((e) => e.fingerprint),
          owner,
        ).catch(() => {})
        throw storeUnavailable(errorOf(failed.reason).message, failed.reason)
      }
      return replies.map((r) => {
        const [state, count, first, last] = (r as PromiseFulfilledResult<Reply>).value
        return { state: STATES[state]!, count, firstSeen: Number(first), lastSeen: Number(last) }
      })
    },
    async commit(entries, owner, now) {
      if (client.status !== 'ready') throw storeUnavailable(`redis is ${client.status}`)
      if (entries.length === 0) return []
      if (batched) {
        const done = await cmds
          .dedupCommitBatch(
            entries.length,
            ...keys(entries.map((e) => e.fingerprint)),
            owner,
            ttlMs,
            now,
            ...entries.map((e) => e.status),
          )
          .catch((err: unknown) => {
            throw storeUnavailable(errorOf(err).message, err)
          })
        return entries.filter((_, i) => Number(done[i]) === 0).map((e) => e.fingerprint)
      }
      const replies = await callAll(entries, (e) =>
        cmds.dedupCommit(DEDUP_KEY_PREFIX + e.fingerprint, owner, ttlMs, e.status, now),
      )
      const failed = replies.find((r) => r.status === 'rejected')
      if (failed) throw storeUnavailable(errorOf(failed.reason).message, failed.reason)
      return entries
        .filter((_, i) => (replies[i] as PromiseFulfilledResult<number>).value === 0)
        .map((e) => e.fingerprint)
    },
  }
}

function errorOf(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason))
}
