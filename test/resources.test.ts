import assert from 'node:assert/strict'
import { test } from 'node:test'
import { CONTAINER_MEMORY_LIMIT_MB, DEFAULT_RESOURCE_LIMITS } from '../shared/config/limits.js'
import { loadConfig } from '../shared/config/load.js'
import { SERVICES } from '../shared/services.js'
import { startReady, stop } from './support/sidecar.js'

/** DESIGN.md §8: every worker runs with memory limits by default. */

test('with no config file every service gets its default limits, and they add up to the documented container limit', () => {
  const inv = loadConfig([], {})
  assert.equal(inv.kind, 'run')
  if (inv.kind !== 'run') return
  for (const s of SERVICES)
    assert.deepEqual(inv.config.services[s].resourceLimits, DEFAULT_RESOURCE_LIMITS[s])
  assert.ok(CONTAINER_MEMORY_LIMIT_MB <= 768, 'README and deploy/ recommend a 768Mi limit')
})

test('each running worker reports a heap limit from its defaults, far under the process default', async () => {
  const sc = await startReady()
  const text = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
  assert.equal(await stop(sc), 0)
  for (const s of SERVICES) {
    const m = new RegExp(`^sia_worker_heap_limit_bytes\\{service="${s}"\\} (\\S+)$`, 'm').exec(text)
    const limitMb = Number(m?.[1]) / 2 ** 20
    const { maxOldGenerationSizeMb = 0, maxYoungGenerationSizeMb = 0 } = DEFAULT_RESOURCE_LIMITS[s]
    // V8's heap limit is the old generation plus part of the young one.
    assert.ok(
      limitMb >= maxOldGenerationSizeMb && limitMb <= maxOldGenerationSizeMb + maxYoungGenerationSizeMb + 8,
      `${s}: heap limit ${limitMb} MiB`,
    )
  }
})
