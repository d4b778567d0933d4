import assert from 'node:assert/strict'
import { existsSync, mkdirSync, mkdtempSync, rmdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { DEFAULT_RESOURCE_LIMITS } from '../shared/config/limits.js'
import { loadConfig } from '../shared/config/load.js'
import { DEFAULT_CONTAINER_MEMORY_MB, NON_HEAP_RSS_MB } from '../shared/container-resources.js'
import { SERVICES } from '../shared/services.js'
import { type Sidecar, startReady, startSidecar, stop } from './support/sidecar.js'

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

const MIB = 2 ** 20

/** A config file of `services` tuning. */
function tuningFile(services: Record<string, unknown>): string {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-limits-')), 'config.json')
  writeFileSync(path, JSON.stringify({ services }))
  return path
}

const heapOf = (service: string, mb: number) => ({
  [service]: { resourceLimits: { maxOldGenerationSizeMb: mb } },
})

/** The configuration error `loadConfig` throws, or a failure if it loads. */
function refusal(...args: Parameters<typeof loadConfig>): string {
  try {
    loadConfig(...args)
  } catch (err) {
    assert.equal((err as { code?: string }).code, 'ERR_CONFIG')
    return (err as Error).message
  }
  return assert.fail(`loaded: ${JSON.stringify(args.slice(0, 2))}`)
}

test("what a worker holds at its bounds must fit in its heap, beside its connections' share: exit 2 naming the setting given", () => {
  // A 24 MiB token heap with the default bounds: ~8,200 distinct keys ended the thread out of
  // heap, before either cache was full (52 MiB at their bounds; the README's 57 MiB measured).
  assert.match(
    refusal(['--config', tuningFile(heapOf('token', 24))], {}),
    /^invalid setting services\.token\.resourceLimits\.maxOldGenerationSizeMb \(in .*\): 24 MiB is too small a token heap for the token caches at their bounds \(TOKEN_CACHE_MAX_ENTRIES 10000, TOKEN_CACHE_MAX_BYTES 16777216, for each of 2 token types: 53 MiB of heap\) beside its idle 10 MiB, in the 50% of its heap its connections leave: at least 125 MiB/,
  )
  assert.equal(loadConfig(['--config', tuningFile(heapOf('token', 125))], {}).kind, 'run')
  // A bound raised past what the default heap holds is named.
  assert.match(
    refusal([], { TOKEN_CACHE_MAX_ENTRIES: '100000' }),
    /^invalid setting TOKEN_CACHE_MAX_ENTRIES: the token caches at their bounds \(TOKEN_CACHE_MAX_ENTRIES 100000, .*needs a token heap of 325 MiB .*, and the token worker's is 128 MiB/,
  )
  assert.match(
    refusal([], { TOKEN_CACHE_MAX_BYTES: '1000000000', TOKEN_CACHE_MAX_ENTRIES: '100000' }),
    /^invalid setting TOKEN_CACHE_MAX_BYTES: /,
  )
  // Both given: the bound is named, and the heap it would take.
  assert.match(
    refusal(['--config', tuningFile(heapOf('token', 200))], { TOKEN_CACHE_MAX_ENTRIES: '100000' }),
    /^invalid setting TOKEN_CACHE_MAX_ENTRIES: 200 MiB is too small a token heap .*: at least 325 MiB/,
  )
  // One token type is one cache; no token server, nothing fills the cache.
  assert.equal(
    loadConfig(['--config', tuningFile(heapOf('token', 80))], { TOKEN_TYPE: 'accesstoken' }).kind,
    'run',
  )
  assert.equal(
    loadConfig(['--config', tuningFile(heapOf('token', 24))], { TOKEN_SERVER_ADDR: '' }).kind,
    'run',
  )
  // The gateway's in-memory dedup store (no REDIS_URL) at GATEWAY_DEDUP_MAX_ENTRIES, the same way.
  assert.match(
    refusal(['--config', tuningFile(heapOf('gateway', 32))], {}),
    /^invalid setting services\.gateway\.resourceLimits\.maxOldGenerationSizeMb \(in .*\): 32 MiB is too small a gateway heap for the in-memory dedup store at its bound \(GATEWAY_DEDUP_MAX_ENTRIES 100000: 23 MiB of heap\) .*: at least 70 MiB/,
  )
  assert.match(
    refusal([], { GATEWAY_DEDUP_MAX_ENTRIES: '1000000' }),
    /^invalid setting GATEWAY_DEDUP_MAX_ENTRIES: the in-memory dedup store at its bound .*needs a gateway heap of 482 MiB/,
  )
  const gateway = tuningFile(heapOf('gateway', 32))
  assert.equal(loadConfig(['--config', gateway], { GATEWAY_DEDUP_MAX_ENTRIES: '1000' }).kind, 'run')
  assert.equal(loadConfig(['--config', gateway], { REDIS_URL: 'redis://127.0.0.1:6379' }).kind, 'run')
  // A figure no host has is no heap limit at all.
  assert.match(
    refusal(['--config', tuningFile(heapOf('token', 1_000_000_000))], {}),
    /^invalid setting services\.token\.resourceLimits\.maxOldGenerationSizeMb \(in .*\): .*16384/,
  )
  assert.match(
    refusal(
      ['--config', tuningFile({ gateway: { resourceLimits: { maxYoungGenerationSizeMb: 4096 } } })],
      {},
    ),
    /^invalid setting services\.gateway\.resourceLimits\.maxYoungGenerationSizeMb \(in .*\): .*1024/,
  )
})

test("the workers' heap limits must fit in the container's memory: the ones raised are exit 2, a container too small for the defaults a warning", () => {
  const run = (...args: Parameters<typeof loadConfig>) => {
    const inv = loadConfig(...args)
    assert.equal(inv.kind, 'run')
    return inv as Extract<typeof inv, { kind: 'run' }>
  }
  // The defaults add up to 758 MiB (the documented 768Mi container); no limit known, no check.
  assert.deepEqual(run([], {}, 768 * MIB).warnings, [])
  const raised = tuningFile({ ...heapOf('gateway', 1024), ...heapOf('token', 1024) })
  assert.deepEqual(run(['--config', raised], {}, null).warnings, [])
  // Two heaps of 1 GiB in a 768 MiB container: a leak in one would OOM-kill the pod.
  assert.match(
    refusal(['--config', raised], {}, 768 * MIB),
    /^invalid setting services\.token\.resourceLimits\.maxOldGenerationSizeMb \(in .*\): the workers' heap limits, the CSR pool's and the 160 MiB the process holds besides come to 2486 MiB, over the container's memory limit \(768 MiB\) \(with services\.gateway\.resourceLimits\.maxOldGenerationSizeMb \(in .*\)\)/,
  )
  // A service that does not run holds no heap.
  assert.deepEqual(
    run(['--config', tuningFile(heapOf('gateway', 1024))], { GATEWAY_ADDR: '' }, 1024 * MIB).warnings,
    [],
  )
  // A container smaller than the defaults need: said, and they run; lowered limits, the same.
  const small = run([], {}, 512 * MIB).warnings
  assert.equal(small.length, 1)
  assert.equal(small[0]!.setting, 'services.*.resourceLimits')
  assert.match(small[0]!.reason, /come to 758 MiB, over the container's memory limit \(512 MiB\)/)
  assert.equal(run(['--config', tuningFile(heapOf('gateway', 96))], {}, 512 * MIB).warnings.length, 1)
  // Raised, but needing no more than the defaults (the gateway's lowered by more): a warning too.
  const moved = tuningFile({ ...heapOf('gateway', 96), ...heapOf('token', 160) })
  assert.equal(run(['--config', moved], {}, 512 * MIB).warnings[0]?.setting, 'services.*.resourceLimits')
  // An init starts no worker.
  assert.deepEqual(run(['--config', raised], { MODE: 'init' }, 768 * MIB).warnings, [])
})

test('SIGHUP with a token heap too small for the token caches: refused naming it, nothing replaced, still serving', async () => {
  const path = tuningFile({})
  const sc = await startReady({ args: ['--config', path] })
  writeFileSync(path, JSON.stringify({ services: heapOf('token', 24) }))
  sc.kill('SIGHUP')
  const failed = await sc.waitForEvent('supervisor.reload.failed')
  assert.match(
    JSON.stringify(failed.err),
    /services\.token\.resourceLimits\.maxOldGenerationSizeMb .*24 MiB is too small a token heap/,
  )
  assert.deepEqual(sc.events('worker.replacing'), [])
  assert.equal((await fetch(`${await sc.url('healthcheck')}/readyz`)).status, 200)
  assert.equal(await stop(sc), 0)
})

test('in a container too small for the heap limits: the ones raised are exit 2 naming them, the defaults run and say so', async (t) => {
  // A memory cgroup of the test's own (cgroup v1, or v2 with the memory controller), 512 MiB.
  const name = `sia-fit-${process.pid}`
  const v1 = existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes')
  const dir = v1 ? `/sys/fs/cgroup/memory/${name}` : `/sys/fs/cgroup/${name}`
  try {
    mkdirSync(dir)
    writeFileSync(join(dir, v1 ? 'memory.limit_in_bytes' : 'memory.max'), String(512 * MIB))
  } catch (err) {
    return t.skip(`cannot make a memory cgroup here (${(err as Error).message}): needs root`)
  }
  const started: Sidecar[] = []
  t.after(async () => {
    // The cgroup can go once no process is in it.
    await Promise.all(started.map((sc) => stop(sc, 'SIGKILL')))
    rmdirSync(dir)
  })
  // Into the cgroup, then the CLI, the same process.
  const command = (node: string, argv: string[]) => ({
    file: '/bin/sh',
    args: ['-c', `echo $$ > ${dir}/cgroup.procs && exec "$0" "$@"`, node, ...argv],
  })
  const raised = startSidecar({ args: ['--config', tuningFile(heapOf('gateway', 1024))], command })
  started.push(raised)
  const ended = await Promise.race([raised.exited, sleep(10_000, { code: 'still running' })])
  assert.equal(ended.code, 2)
  assert.deepEqual(raised.records, [], 'nothing was started')
  assert.match(
    raised.stderr(),
    /^sia-supervisor: invalid setting services\.gateway\.resourceLimits\.maxOldGenerationSizeMb \(in .*\): .*over the container's memory limit \(512 MiB\)/,
  )
  const defaults = startSidecar({ command })
  started.push(defaults)
  await defaults.waitForEvent('supervisor.ready', {}, 30_000)
  const warning = defaults.events('config.warning')
  assert.equal(warning.length, 1)
  assert.equal(warning[0]!.setting, 'services.*.resourceLimits')
  assert.match(String(warning[0]!.reason), /come to 758 MiB, over the container's memory limit \(512 MiB\)/)
  assert.equal(await stop(defaults), 0)
})
