import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { test } from 'node:test'
import { loadConfigOnce } from '../supervisor/load-config.js'

// The supervisor's copy of the loader: dist/shared/config/loader.cjs, made by the build's bundle step.
const require = createRequire(new URL('../supervisor/load-config.js', import.meta.url))
const loader = require.resolve('../shared/config/loader.cjs')
const loaded = () => Object.keys(require.cache).filter((f) => f === loader)

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
