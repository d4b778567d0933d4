import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8'
import { resourceLimits } from 'node:worker_threads'

/** The young generation's spaces: not counted against the old generation's limit. */
const YOUNG = new Set(['new_space', 'new_large_object_space'])

/**
 * A worker's heap as its limit sees it: V8 ends a worker when its old generation reaches
 * `maxOldGenerationSizeMb`. `heap_size_limit` adds a reserve for the young generation, which a
 * leak never reaches: a worker given 128 MiB old and 16 MiB young dies with its heap at ~84% of
 * that, so a `recycleAtPercent` of 90 against it would never fire. So: the old generation's use
 * against its own limit (outside a worker, where no limit was given, V8's whole heap).
 */
export function heapVitals(): { usedBytes: number; limitBytes: number } {
  const oldLimitMb = resourceLimits.maxOldGenerationSizeMb
  if (!oldLimitMb) {
    const heap = getHeapStatistics()
    return { usedBytes: heap.used_heap_size, limitBytes: heap.heap_size_limit }
  }
  let usedBytes = 0
  for (const space of getHeapSpaceStatistics()) {
    if (!YOUNG.has(space.space_name)) usedBytes += space.space_used_size
  }
  return { usedBytes, limitBytes: oldLimitMb * 2 ** 20 }
}
