import assert from 'node:assert/strict'
import { test } from 'node:test'
import { claimPort } from '../supervisor/port-claim.js'
import { serverPorts } from './support/ports.js'
import { startReady, startSidecar, stop } from './support/sidecar.js'

test('a claimed port is refused to a second claim, naming the setting, until it is released', async () => {
  const { token } = await serverPorts()
  const release = await claimPort(token, 'TOKEN_SERVER_ADDR')
  await assert.rejects(claimPort(token, 'TOKEN_SERVER_ADDR'), {
    code: 'ERR_PORT_IN_USE',
    message: `TOKEN_SERVER_ADDR: port ${token} is served by another sia-supervisor in this network namespace`,
  })
  release()
  const again = await claimPort(token, 'TOKEN_SERVER_ADDR')
  again()
})

test('a second sidecar on the same ports exits 1 naming the setting; the first keeps every connection; SIGKILL frees them', async () => {
  const ports = await serverPorts()
  const first = await startReady({ env: ports.env })
  const second = startSidecar({ env: ports.env })
  const { code } = await second.exited
  assert.equal(code, 1)
  const failed = second.events('service.start.failed')
  assert.equal(failed.length, 1)
  assert.equal(failed[0]!.service, 'token')
  const err = failed[0]!.err as { code: string; message: string }
  assert.equal(err.code, 'ERR_PORT_IN_USE')
  assert.equal(
    err.message,
    `TOKEN_SERVER_ADDR: port ${ports.token} is served by another sia-supervisor in this network namespace`,
  )
  assert.deepEqual(second.events('server.listening'), [], 'the second bound nothing')
  // One outcome a service: the one whose claim failed is not also skipped.
  assert.deepEqual(
    second.events('service.start.skipped').map((r) => r.service),
    ['certificate', 'memory-reporter', 'gateway', 'metrics', 'healthcheck'],
  )
  // Every connection reaches the first: with the ports shared, some would have gone to the second.
  for (let i = 0; i < 20; i++) {
    const res = await fetch(`http://127.0.0.1:${ports.health}/readyz`, { headers: { connection: 'close' } })
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { phase: string }).phase, 'running')
  }
  assert.equal(first.proc.exitCode, null)

  // The claims die with the process, however it ends.
  assert.equal(await stop(first, 'SIGKILL'), null)
  const third = await startReady({ env: ports.env })
  assert.ok(third.events('server.listening').some((r) => r.service === 'token' && r.port === ports.token))
  assert.equal(await stop(third), 0)
})
