import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { Worker } from 'node:worker_threads'

const HEAP_VITALS = new URL('../shared/heap-vitals.js', import.meta.url).href

/**
 * A worker that leaks in small steps, reporting its heap vitals after each one until V8 ends it at
 * its limit. `recycleAtPercent` compares the same two figures: it must be able to reach 90%.
 */
test('heap vitals reach the limit a leaking worker dies at, whatever its young generation', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'sia-heap-')), 'leak.mjs')
  writeFileSync(
    file,
    `import { parentPort } from 'node:worker_threads'
     import { heapVitals } from ${JSON.stringify(HEAP_VITALS)}
     const hoard = []
     const step = () => {
       hoard.push(Array.from({ length: 1 << 15 }, (_, k) => k + hoard.length))
       parentPort.postMessage(heapVitals())
       setImmediate(step)
     }
     step()`,
  )
  // The token and gateway workers' limits. The last figure before the end may be short of the
  // limit by what the young generation promotes at once (its 8 MiB semi-space: 6% of 128 MiB).
  for (const resourceLimits of [
    { maxOldGenerationSizeMb: 128, maxYoungGenerationSizeMb: 16 },
    { maxOldGenerationSizeMb: 192, maxYoungGenerationSizeMb: 16 },
  ]) {
    const worker = new Worker(file, { resourceLimits })
    let highest = 0
    let limit = 0
    worker.on('message', (v: { usedBytes: number; limitBytes: number }) => {
      highest = Math.max(highest, v.usedBytes / v.limitBytes)
      limit = v.limitBytes
    })
    const err = await new Promise<Error & { code?: string }>((resolve) => worker.once('error', resolve))
    assert.equal(err.code, 'ERR_WORKER_OUT_OF_MEMORY')
    assert.equal(limit, resourceLimits.maxOldGenerationSizeMb * 2 ** 20)
    assert.ok(highest >= 0.9, `the heap reached ${(100 * highest).toFixed(1)}% of its limit at most`)
    assert.ok(highest <= 1.01, `${(100 * highest).toFixed(1)}%: more than the limit`)
  }
})
