import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { DEFAULT_RESOURCE_LIMITS } from '../shared/config/limits.js'
import { loadConfig } from '../shared/config/load.js'
import { DEFAULT_CONTAINER_MEMORY_MB, NON_HEAP_RSS_MB } from '../shared/container-resources.js'
import { SERVICES } from '../shared/services.js'
import { startReady, stop } from './support/sidecar.js'

/** DESIGN.md §8: every worker runs with memory limits by default. */

test('with no config file every service gets its default limits, and they add up to the documented container limit', () => {
  const inv = loadConfig([], {})
  assert.equal(inv.kind, 'run')
  if (inv.kind !== 'run') return
  for (const s of SERVICES)
    assert.deepEqual(inv.config.services[s].resourceLimits, DEFAULT_RESOURCE_LIMITS[s])
  const heaps = SERVICES.reduce((sum, s) => {
    const l = DEFAULT_RESOURCE_LIMITS[s]
    return sum + (l.maxOldGenerationSizeMb ?? 0) + (l.maxYoungGenerationSizeMb ?? 0)
  }, 0)
  assert.ok(heaps + NON_HEAP_RSS_MB <= DEFAULT_CONTAINER_MEMORY_MB, `${heaps} + ${NON_HEAP_RSS_MB} MiB`)
})

test('each running worker reports a heap limit from its defaults, far under the process default', async () => {
  const sc = await startReady()
  const text = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
  assert.equal(await stop(sc), 0)
  for (const s of SERVICES) {
    const m = new RegExp(`^sia_worker_heap_limit_bytes\\{service="${s}"\\} (\\S+)$`, 'm').exec(text)
    const limitMb = Number(m?.[1]) / 2 ** 20
    // The old generation's: where V8 ends the worker (heap-vitals.ts), and what recycling uses.
    assert.equal(
      limitMb,
      DEFAULT_RESOURCE_LIMITS[s].maxOldGenerationSizeMb,
      `${s}: heap limit ${limitMb} MiB`,
    )
  }
})

test('a limit from the config file reaches the certificate worker, which is otherwise started before the config is read', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-limits-'))
  const file = join(dir, 'config.json')
  writeFileSync(
    file,
    JSON.stringify({
      services: {
        certificate: { resourceLimits: { maxOldGenerationSizeMb: 40, maxYoungGenerationSizeMb: 2 } },
      },
    }),
  )
  const sc = await startReady({ args: ['--config', file] })
  const text = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
  assert.equal(await stop(sc), 0)
  const m = /^sia_worker_heap_limit_bytes\{service="certificate"\} (\S+)$/m.exec(text)
  const limitMb = Number(m?.[1]) / 2 ** 20
  // The default is 64 MiB: the configured 40 MiB, not the thread started ahead.
  assert.equal(limitMb, 40, `certificate: heap limit ${limitMb} MiB`)
})
