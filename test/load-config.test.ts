import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { test } from 'node:test'
import { getHeapSnapshot, setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { loadConfigOnce } from '../supervisor/load-config.js'

// The supervisor's copy of the loader: dist/shared/config/loader.cjs, made by the build's bundle step.
const require = createRequire(new URL('../supervisor/load-config.js', import.meta.url))
const loader = require.resolve('../shared/config/loader.cjs')
const loaded = () => Object.keys(require.cache).filter((f) => f === loader)

/** The strings of this thread's heap after a full collection (a snapshot collects first). */
async function heapStrings(): Promise<Set<string>> {
  let json = ''
  for await (const chunk of getHeapSnapshot()) json += chunk
  return new Set((JSON.parse(json) as { strings: string[] }).strings)
}

test('the configuration is loaded from its bundle and the bundle is dropped after the call', () => {
  const invocation = loadConfigOnce(['--log-level', 'warn'], { SHUTDOWN_DELAY: '2s' })
  assert.equal(invocation.kind, 'run')
  assert.ok(invocation.kind === 'run')
  assert.equal(invocation.config.logLevel, 'warn')
  assert.equal(invocation.config.shutdownDelay, 2000)
  assert.deepEqual(loaded(), [])
})

test('an invalid setting throws the loader error, and the bundle is dropped all the same', () => {
  assert.throws(() => loadConfigOnce([], { TOKEN_SERVER_ADDR: 'bogus' }), {
    code: 'ERR_CONFIG',
    message: /TOKEN_SERVER_ADDR/,
  })
  assert.deepEqual(loaded(), [])
})

test("nothing keeps the loader's code alive once it is dropped (its functions are collected)", async () => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  loadConfigOnce([], {})
  // Function names the bundle keeps (esbuild keepNames), in no other module this test loads; each
  // joined from its parts only after a snapshot and not kept, since the joined string would
  // itself be a string of the next snapshot's heap.
  const parts = [
    ['read', 'ConfigFile'],
    ['check', 'PortsApart'],
  ]
  // V8 lets go of a script it compiled recently only as its compilation cache ages, over a few
  // full collections (one was not always enough on a loaded machine): a few rounds, a turn of
  // the loop apart (five were not always enough with the suite's three files at a time). What
  // something really holds stays through all of them.
  let left: number[] = []
  for (let round = 0; round < 12; round++) {
    gc()
    gc()
    const strings = await heapStrings()
    left = parts.flatMap((p, i) => (strings.has(p.join('')) ? [i] : []))
    if (left.length === 0) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  assert.deepEqual(
    left.map((i) => parts[i]!.join('')),
    [],
    'still in the heap after twelve rounds of full collections',
  )
})
