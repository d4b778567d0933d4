import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { type CodedError, codedError } from '../../shared/errors.js'
import type { Logger } from '../../shared/logger.js'
import { mapSliced } from '../../shared/slices.js'
import { coalesce } from './coalesce.js'
import {
  type DedupEntry,
  type DedupResult,
  type DedupState,
  type DedupStore,
  KEY_REFUSED,
  storeUnavailable,
} from './dedup-store.js'
import type { RedisClient } from './redis-client.js'

export const DEDUP_KEY_PREFIX = 'sia:gateway:dedup:'
/** How long a probe's record lives. */
const PROBE_TTL_MS = 1000

/** What ioredis rejects a command with at its `commandTimeout`. */
const COMMAND_TIMED_OUT = 'Command timed out'

/**
 * What a record script makes of a reply that may be an error (redis.pcall's): the error of a key
 * someone else wrote under the prefix (not a hash: WRONGTYPE; a hash whose count is not a number,
 * or is at 2^63-1), which refuses that one alert (REFUSED_STATE, with the error), or nil. Any
 * other error (an ACL without the command, out of memory) is the store's: raised, it fails the
 * call as before.
 */
const REFUSED_LUA = `
local function refused(reply)
  if type(reply) ~= 'table' or not reply.err then return nil end
  local e = reply.err
  if string.find(e, 'WRONGTYPE', 1, true) == 1 or string.find(e, 'not an integer', 1, true)
    or string.find(e, 'would overflow', 1, true) then
    return e
  end
  error(reply)
end
`

/**
 * KEYS[1] the fingerprint's hash; ARGV status, now (ms), ttl (ms), owner (the request), lease (ms).
 * Fields: status, count, first, last, id (owner), pending ("1" while the owner writes the sink).
 * - a pending record of another owner is a live lease (an expired one has expired with its key):
 *   answered `pending` (2), untouched;
 * - same status (committed, or this owner's own pending record, a repeat inside the batch): a
 *   duplicate, counted (0); a committed record's TTL slides;
 * - otherwise (absent, expired, the status changed): new (1), a pending lease of `owner` that
 *   expires after `lease` unless committed. HSET writes every field a record has, so nothing of
 *   the record it replaces is left.
 * Records of older versions carry no `pending` field: committed. A key someone else wrote: refused
 * (3, with Redis's error), untouched.
 */
const RECORD_LUA = `${REFUSED_LUA}
local cur = redis.pcall('HMGET', KEYS[1], 'status', 'first', 'id', 'pending', 'count', 'last')
local why = refused(cur)
if why then return {3, 0, why, '0'} end
if cur[4] == '1' and cur[3] ~= ARGV[4] then
  return {2, tonumber(cur[5]) or 0, cur[2] or '0', cur[6] or '0'}
end
if cur[1] == ARGV[1] then
  local count = redis.pcall('HINCRBY', KEYS[1], 'count', 1)
  why = refused(count)
  if why then return {3, 0, why, '0'} end
  redis.call('HSET', KEYS[1], 'last', ARGV[2])
  if cur[4] ~= '1' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
  return {0, count, cur[2], ARGV[2]}
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'count', 1, 'first', ARGV[2], 'last', ARGV[2], 'id', ARGV[4], 'pending', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, 1, ARGV[2], ARGV[2]}
`

/**
 * KEYS[1]; ARGV owner, ttl (ms), status, now (ms). The owner's lease becomes a committed record
 * that lives the TTL (1). A lease that expired unclaimed is recorded anew, committed (1). A record
 * someone else holds is left alone (0): our lease ran out while we wrote; so is a key that is no
 * longer a hash (another type written under our prefix).
 */
const COMMIT_LUA = `${REFUSED_LUA}
local cur = redis.pcall('HMGET', KEYS[1], 'id', 'pending')
if refused(cur) then return 0 end
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

/**
 * Deletes the record only if it is a pending lease of `ARGV[1]` (never someone else's). A key that
 * is not a hash (HMGET fails) is nobody's lease: skipped, so a release never stops part way.
 */
const RELEASE_LUA = `
local cur = redis.pcall('HMGET', KEYS[1], 'id', 'pending')
if not cur.err and cur[1] == ARGV[1] and cur[2] == '1' then
  return redis.call('DEL', KEYS[1])
end
return 0
`

/**
 * RECORD_LUA over the calls of every request that reached the store in one turn of the loop, for
 * one Redis (standalone or behind Sentinel): one command, run atomically, the calls in arrival
 * order and each call's alerts in its batch's order, so the outcome is that of the calls one after
 * the other. A cluster keeps one call per alert, since a script's keys must share a hash slot.
 * KEYS every call's fingerprints, call after call; ARGV ttl, lease, then per call: owner, now, its
 * key count n and its n statuses. The replies of RECORD_LUA, flat: a key someone else wrote is
 * refused and the script goes on, so it fails only the request whose alert it is, not every
 * request of the turn.
 */
const RECORD_GROUP_LUA = `${REFUSED_LUA}
local ttl, lease = ARGV[1], ARGV[2]
local out, k, a = {}, 0, 3
local function put(state, count, first, last)
  out[#out + 1] = state
  out[#out + 1] = count
  out[#out + 1] = first
  out[#out + 1] = last
end
while a <= #ARGV do
  local owner, now, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  for j = 1, n do
    local key, status = KEYS[k + j], ARGV[a + 2 + j]
    local cur = redis.pcall('HMGET', key, 'status', 'first', 'id', 'pending', 'count', 'last')
    local why = refused(cur)
    if why then
      put(3, 0, why, '0')
    elseif cur[4] == '1' and cur[3] ~= owner then
      put(2, tonumber(cur[5]) or 0, cur[2] or '0', cur[6] or '0')
    elseif cur[1] == status then
      local count = redis.pcall('HINCRBY', key, 'count', 1)
      why = refused(count)
      if why then
        put(3, 0, why, '0')
      else
        redis.call('HSET', key, 'last', now)
        if cur[4] ~= '1' then redis.call('PEXPIRE', key, ttl) end
        put(0, count, cur[2] or '0', now)
      end
    else
      redis.call('HSET', key, 'status', status, 'count', 1, 'first', now, 'last', now, 'id', owner, 'pending', '1')
      redis.call('PEXPIRE', key, lease)
      put(1, 1, now, now)
    end
  end
  k = k + n
  a = a + 3 + n
end
return out
`

/**
 * COMMIT_LUA over a turn's calls: ARGV ttl, then per call owner, now, n, n statuses; a reply per
 * key. A key that is no longer a hash (someone else's write) holds no lease of ours: 0.
 */
const COMMIT_GROUP_LUA = `${REFUSED_LUA}
local ttl = ARGV[1]
local out, k, a = {}, 0, 2
while a <= #ARGV do
  local owner, now, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  for j = 1, n do
    local key = KEYS[k + j]
    local cur = redis.pcall('HMGET', key, 'id', 'pending')
    if refused(cur) then
      out[k + j] = 0
    elseif cur[1] == owner then
      if cur[2] then redis.call('HDEL', key, 'pending') end
      redis.call('PEXPIRE', key, ttl)
      out[k + j] = 1
    elseif not cur[1] then
      redis.call('HSET', key, 'status', ARGV[a + 2 + j], 'count', 1, 'first', now, 'last', now, 'id', owner)
      redis.call('PEXPIRE', key, ttl)
      out[k + j] = 1
    else
      out[k + j] = 0
    end
  end
  k = k + n
  a = a + 3 + n
end
return out
`

/** RELEASE_LUA over a batch: ARGV owner; how many leases were deleted. */
const RELEASE_BATCH_LUA = `
local n = 0
for _, key in ipairs(KEYS) do
  local cur = redis.pcall('HMGET', key, 'id', 'pending')
  if not cur.err and cur[1] == ARGV[1] and cur[2] == '1' then n = n + redis.call('DEL', key) end
end
return n
`

/**
 * Keys in one grouped script call at most: a long script holds Redis for everyone, and its
 * command is encoded (and its reply decoded) in one piece on the loop. A larger batch is cut into
 * parts of this size (`partsOf`).
 */
const GROUP_MAX_KEYS = 1024

/** One request's part of a grouped call. */
interface Call {
  entries: readonly DedupEntry[]
  owner: string
  now: number
}

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
  dedupRecordGroup(n: number, keys: string[], args: (string | number)[]): Promise<(number | string)[]>
  dedupCommitGroup(n: number, keys: string[], args: (string | number)[]): Promise<number[]>
  dedupReleaseBatch(n: number, keys: string[], owner: string): Promise<number>
}

type Reply = [number, number, string, string]

const STATES: readonly DedupState[] = ['duplicate', 'new', 'pending']
/** The record scripts' state for a key someone else wrote; the reply's third field is Redis's error. */
const REFUSED_STATE = 3
const refused = (r: Reply) => r[0] === REFUSED_STATE
/** A refused key's reply as its request's failure (nothing was leased on that key). */
const settledReply = (value: Reply): PromiseSettledResult<Reply> =>
  refused(value)
    ? { status: 'rejected', reason: codedError(KEY_REFUSED, value[2]) }
    : { status: 'fulfilled', value }

/**
 * Issues one call per item (an entry, or a part of a batch), in slices (a large batch's thousands
 * of commands would hold the loop while they are encoded): every call is still sent before any
 * reply is awaited, so the batch stays one pipelined round trip. Each call is settled as soon as
 * it is made, so one that fails while later slices are being issued is never an unhandled
 * rejection.
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

function partsOf<T>(items: readonly T[]): T[][] {
  const parts: T[][] = []
  for (let i = 0; i < items.length; i += GROUP_MAX_KEYS) parts.push(items.slice(i, i + GROUP_MAX_KEYS))
  return parts
}

/** A grouped script's KEYS and ARGV: after `head`, per call its owner, now, key count and statuses. */
function groupArgs(calls: readonly Call[], head: number[]): { keys: string[]; args: (string | number)[] } {
  const keys: string[] = []
  const args: (string | number)[] = [...head]
  for (const c of calls) {
    args.push(c.owner, c.now, c.entries.length)
    for (const e of c.entries) {
      keys.push(DEDUP_KEY_PREFIX + e.fingerprint)
      args.push(e.status)
    }
  }
  return { keys, args }
}

const weight = (c: Call) => c.entries.length

/**
 * `reply`, unless it timed out on a connection that says it is open: that connection may be
 * half-open (a node lost without a FIN, a partition, a hung proxy), which only a new one can tell.
 * Left alone, ioredis waits on it until the kernel gives up on the socket (~15 min), or for ever
 * if something still acknowledges it. In a cluster, only that node's connection is replaced.
 */
async function replaceIfSilent<T>(node: Redis | RedisClient, reply: Promise<T>, log?: Logger): Promise<T> {
  try {
    return await reply
  } catch (err) {
    if (node.status === 'ready' && (err as Error).message === COMMAND_TIMED_OUT) {
      log?.warn(
        { event: 'gateway.redis.reconnecting' },
        'redis sent no reply in time on a connection that is still open: connecting again',
      )
      node.disconnect(true)
    }
    throw err
  }
}

/**
 * Check-and-lease: on one Redis, the calls of every request of a loop turn in one atomic Lua call
 * (coalesce.ts), a large batch in parts of GROUP_MAX_KEYS, one call each, sent a slice of the loop
 * apart and all before any reply is awaited; on a cluster, one call per alert, all issued at
 * once, in order, which the client's auto-pipelining sends in one write and one round trip per
 * node (a script's keys, like an explicit pipeline, must stay in one hash slot; the fingerprints
 * of a batch do not). Calls on one key go to one node over one connection, so their order holds.
 * The commit after the sink write is a second round trip of the same kind. Lease expiry is
 * Redis's own PEXPIRE: no clock skew between replicas matters.
 */
export function createRedisStore(
  client: RedisClient,
  ttlMs: number,
  leaseMs: number,
  log?: Logger,
): DedupStore {
  client.defineCommand('dedupRecord', { numberOfKeys: 1, lua: RECORD_LUA })
  client.defineCommand('dedupCommit', { numberOfKeys: 1, lua: COMMIT_LUA })
  client.defineCommand('dedupRelease', { numberOfKeys: 1, lua: RELEASE_LUA })
  // No numberOfKeys: the key count is the first argument of each call.
  client.defineCommand('dedupRecordGroup', { lua: RECORD_GROUP_LUA })
  client.defineCommand('dedupCommitGroup', { lua: COMMIT_GROUP_LUA })
  client.defineCommand('dedupReleaseBatch', { lua: RELEASE_BATCH_LUA })
  const cmds = client as unknown as ScriptCommands
  const grouped = !client.isCluster
  // A grouped call is already one command a turn for every request: auto-pipelining would only
  // hold it until the replies of the pipeline in flight are back (one at a time per connection).
  if (grouped) {
    const ignored = client.options.autoPipeliningIgnoredCommands ?? []
    client.options.autoPipeliningIgnoredCommands = [...ignored, 'dedupRecordGroup', 'dedupCommitGroup']
  }
  /** `key`: the one whose call failed, named when it is refused as someone else's write. */
  const unavailable = (err: unknown, key?: string) => {
    const { message } = errorOf(err)
    return key && isRefusal(err)
      ? codedError(KEY_REFUSED, `${key} is not a dedup record (someone else's write): ${message}`, err)
      : storeUnavailable(message, err)
  }

  /** A turn's records as one script call; each call gets its replies (RECORD_LUA's, four a key). */
  const recordGroup = coalesce(
    async (calls: readonly Call[]): Promise<Reply[][]> => {
      const { keys, args } = groupArgs(calls, [ttlMs, leaseMs])
      const flat = await cmds.dedupRecordGroup(keys.length, keys, args)
      let at = 0
      return calls.map((c) =>
        c.entries.map((): Reply => {
          const r: Reply = [
            Number(flat[at]),
            Number(flat[at + 1]),
            String(flat[at + 2]),
            String(flat[at + 3]),
          ]
          at += 4
          return r
        }),
      )
    },
    weight,
    GROUP_MAX_KEYS,
  )
  /** A turn's commits as one script call; each call gets a 1 (committed) or 0 a key. */
  const commitGroup = coalesce(
    async (calls: readonly Call[]): Promise<number[][]> => {
      const { keys, args } = groupArgs(calls, [ttlMs])
      const done = await cmds.dedupCommitGroup(keys.length, keys, args)
      let at = 0
      return calls.map((c) => c.entries.map(() => Number(done[at++])))
    },
    weight,
    GROUP_MAX_KEYS,
  )

  const release = async (fingerprints: readonly string[], owner: string) => {
    if (fingerprints.length === 0) return
    const done = grouped
      ? await callAll(partsOf(fingerprints), (part) =>
          cmds.dedupReleaseBatch(
            part.length,
            part.map((fp) => DEDUP_KEY_PREFIX + fp),
            owner,
          ),
        )
      : await callAll(fingerprints, (fp) => cmds.dedupRelease(DEDUP_KEY_PREFIX + fp, owner))
    for (const d of done) if (d.status === 'rejected') throw unavailable(d.reason)
  }

  /**
   * Every entry's reply. When any call failed, the batch fails, and what this request leased is
   * released, so that a retry finds it new rather than waiting the lease out: every entry a call
   * answered `new` for, and every entry of a call Redis answered with an error (a script that
   * fails part way keeps what it wrote before the error). A call that timed out or lost its
   * connection may have leased too; those leases expire on their own.
   */
  const repliesOrRelease = async (
    entries: readonly DedupEntry[],
    replies: readonly PromiseSettledResult<Reply>[],
    owner: string,
  ): Promise<Reply[]> => {
    const failed = (r: PromiseSettledResult<Reply>) => r.status === 'rejected'
    if (!replies.some(failed)) return replies.map((r) => (r as PromiseFulfilledResult<Reply>).value)
    // The store failing outranks a refused key: it is what readiness must hear of.
    const storeFailure = replies.findIndex(
      (r) => failed(r) && !isRefusal((r as PromiseRejectedResult).reason),
    )
    const at = storeFailure >= 0 ? storeFailure : replies.findIndex(failed)
    const leased = entries.filter((_, i) => {
      const r = replies[i]!
      return r.status === 'fulfilled'
        ? r.value[0] === 1
        : (r.reason as Error | undefined)?.name === 'ReplyError'
    })
    await release(
      leased.map((e) => e.fingerprint),
      owner,
    ).catch(() => {})
    throw unavailable(
      (replies[at] as PromiseRejectedResult).reason,
      DEDUP_KEY_PREFIX + entries[at]!.fingerprint,
    )
  }

  /** One Redis: the batch in parts of GROUP_MAX_KEYS, each one grouped call. */
  const recordParts = async (entries: readonly DedupEntry[], owner: string, now: number) => {
    const parts = partsOf(entries)
    const settled = await Promise.allSettled(parts.map((part) => recordGroup({ entries: part, owner, now })))
    // The common case without a wrapper per entry: a large batch's replies are a long array.
    if (settled.every((s) => s.status === 'fulfilled' && !s.value.some(refused))) {
      return settled.flatMap((s) => (s as PromiseFulfilledResult<Reply[]>).value)
    }
    const replies = settled.flatMap((s, i): PromiseSettledResult<Reply>[] =>
      s.status === 'fulfilled'
        ? s.value.map(settledReply)
        : parts[i]!.map(() => ({ status: 'rejected', reason: s.reason })),
    )
    return repliesOrRelease(entries, replies, owner)
  }

  /** Cluster: one call per alert. */
  const recordEach = async (entries: readonly DedupEntry[], owner: string, now: number) => {
    const replies = await callAll(entries, (e) =>
      cmds.dedupRecord(DEDUP_KEY_PREFIX + e.fingerprint, e.status, now, ttlMs, owner, leaseMs),
    )
    return repliesOrRelease(
      entries,
      replies.map((r) => (r.status === 'fulfilled' ? settledReply(r.value) : r)),
      owner,
    )
  }

  /** One Redis: the commits in parts of GROUP_MAX_KEYS, each one grouped call. */
  const commitParts = async (entries: readonly DedupEntry[], owner: string, now: number) => {
    const done = await Promise.all(partsOf(entries).map((part) => commitGroup({ entries: part, owner, now })))
    return done.flat()
  }

  const commitEach = async (entries: readonly DedupEntry[], owner: string, now: number) => {
    const replies = await callAll(entries, (e) =>
      cmds.dedupCommit(DEDUP_KEY_PREFIX + e.fingerprint, owner, ttlMs, e.status, now),
    )
    const failed = replies.find((r) => r.status === 'rejected')
    if (failed) throw unavailable(failed.reason)
    return replies.map((r) => (r as PromiseFulfilledResult<number>).value)
  }

  return {
    kind: 'redis',
    up: () => client.status === 'ready',
    // Run only while the store is failing (health.ts): every master answers (in a cluster, a
    // batch reaches them all, a key only the one that holds it), then a record of the script
    // every request runs, on a key no alert has, that expires at once, each within the client's
    // command timeout. (A plain SET passed where the scripts were refused, by an ACL without
    // scripting: ready again a second after each request answered 503.)
    async probe() {
      const masters = 'nodes' in client ? client.nodes('master') : [client]
      await Promise.all(masters.map((node) => replaceIfSilent(node, node.ping(), log)))
      const key = `${DEDUP_KEY_PREFIX}probe:${randomUUID()}`
      await replaceIfSilent(
        client,
        cmds.dedupRecord(key, 'firing', Date.now(), PROBE_TTL_MS, 'probe', PROBE_TTL_MS),
        log,
      )
    },
    release,
    async record(entries: readonly DedupEntry[], owner: string, now: number): Promise<DedupResult[]> {
      if (client.status !== 'ready') throw storeUnavailable(`redis is ${client.status}`)
      if (entries.length === 0) return []
      const replies = grouped ? await recordParts(entries, owner, now) : await recordEach(entries, owner, now)
      return mapSliced(replies, ([state, count, first, last]) => ({
        state: STATES[state]!,
        count,
        firstSeen: Number(first),
        lastSeen: Number(last),
      }))
    },
    async commit(entries, owner, now) {
      if (client.status !== 'ready') throw storeUnavailable(`redis is ${client.status}`)
      if (entries.length === 0) return []
      const done = grouped
        ? await commitParts(entries, owner, now).catch((err: unknown) => {
            throw unavailable(err)
          })
        : await commitEach(entries, owner, now)
      return entries.filter((_, i) => done[i] === 0).map((e) => e.fingerprint)
    },
  }
}

function isRefusal(reason: unknown): boolean {
  return (reason as Partial<CodedError> | undefined)?.code === KEY_REFUSED
}

function errorOf(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason))
}
