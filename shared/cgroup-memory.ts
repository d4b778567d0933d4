import { join } from 'node:path'

/**
 * Where the container's memory limit is written (its cgroup's hard limit, v1
 * `memory.limit_in_bytes` or v2 `memory.max`), most specific first, given /proc/self/cgroup's text:
 * this process's cgroup, else the mount's root (a container's own cgroup without a cgroup
 * namespace). libuv's `process.constrainedMemory()` gives the lower of it and a soft limit; v2's
 * root file alone left a v1 host's limit unshown.
 */
export function memoryLimitFiles(selfCgroup: string): string[] {
  const v1 = /^\d+:(?:[^:\n]*,)?memory(?:,[^:\n]*)?:(.*)$/m.exec(selfCgroup)?.[1]
  const v2 = /^0::(.*)$/m.exec(selfCgroup)?.[1]
  return v1 !== undefined
    ? [
        join('/sys/fs/cgroup/memory', v1, 'memory.limit_in_bytes'),
        '/sys/fs/cgroup/memory/memory.limit_in_bytes',
      ]
    : [join('/sys/fs/cgroup', v2 ?? '/', 'memory.max'), '/sys/fs/cgroup/memory.max']
}

/**
 * A limit file's text: the limit in bytes, null for none (v2 says "max", v1 a figure near 2^63),
 * undefined for a file that holds no limit (unread, or empty): the next one is asked.
 */
export function parseMemoryLimit(text: string): number | null | undefined {
  const t = text.trim()
  if (t === 'max') return null
  if (/^\d+$/.test(t)) return Number(t) < 2 ** 60 ? Number(t) : null
  return undefined
}

/**
 * The container's memory limit in bytes, or null (none, or not Linux), read with `read` (which
 * answers '' for a file it cannot read).
 */
export function containerMemoryLimitSync(read: (path: string) => string): number | null {
  for (const file of memoryLimitFiles(read('/proc/self/cgroup'))) {
    const limit = parseMemoryLimit(read(file))
    if (limit !== undefined) return limit
  }
  return null
}
