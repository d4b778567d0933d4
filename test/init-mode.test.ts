import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { startSidecar } from './support/sidecar.js'

test('MODE=init writes key and certificate once and exits 0 without starting any service', async () => {
  const sc = startSidecar({ env: { MODE: 'init' } })
  const { code } = await sc.exited
  assert.equal(code, 0, sc.stderr())
  assert.equal(statSync(join(sc.dataDir, 'key.pem')).mode & 0o777, 0o600)
  assert.equal(statSync(join(sc.dataDir, 'cert.pem')).mode & 0o777, 0o644)
  assert.deepEqual(sc.events('service.start.begin'), [], 'no worker was started')
  assert.deepEqual(
    sc.events('supervisor.exit').map((r) => [r.code, r.cause]),
    [[0, 'init']],
  )
})

test('MODE=init exits 1 when the identity cannot be obtained', async () => {
  // files provider (ENDPOINT set, no PROVIDER_SERVICE) with no key or cert on disk.
  const sc = startSidecar({ env: { MODE: 'init', ENDPOINT: 'https://127.0.0.1:1/zts/v1' } })
  const { code } = await sc.exited
  assert.equal(code, 1)
  assert.deepEqual(
    sc.events('supervisor.exit').map((r) => [r.code, r.cause]),
    [[1, 'init']],
  )
})
