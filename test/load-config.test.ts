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
  gc()
  const strings = await heapStrings()
  // Function names the bundle keeps (esbuild keepNames), in no other module this test loads; made
  // after the snapshot, since a literal of this file would itself be a string of the heap.
  const names = [
    ['read', 'ConfigFile'],
    ['check', 'PortsApart'],
  ].map((parts) => parts.join(''))
  for (const name of names) assert.ok(!strings.has(name), `${name} is still in the heap`)
})
