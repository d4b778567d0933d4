import { resourceLimits } from 'node:worker_threads'

/**
 * A piscina task for test/csr-pool.test.ts: `hog` keeps allocating until its thread's heap limit
 * ends it; anything else answers the limits the thread runs with.
 */
export default function run(task: 'hog' | 'limits'): unknown {
  if (task === 'limits') return resourceLimits
  // As the `oom` failpoint allocates (shared/failpoints.ts): reachable objects only.
  const kept: number[][] = []
  for (;;) kept.push(Array.from({ length: 1 << 16 }, (_, i) => i + kept.length))
}
