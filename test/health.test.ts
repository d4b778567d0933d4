import assert from 'node:assert/strict'
import { test } from 'node:test'
import { loadConfig } from '../shared/config/load.js'
import type { Config } from '../shared/config/types.js'
import { liveness, readiness } from '../shared/readiness.js'
import { SERVICES } from '../shared/services.js'
import { createStatusBoard } from '../shared/status-board.js'

const config = (env: Record<string, string> = {}) => (loadConfig([], env) as { config: Config }).config

function runningBoard(now: number) {
  const board = createStatusBoard()
  board.setPhase('running')
  board.beat('supervisor', now)
  for (const s of SERVICES) {
    board.setState(s, 'running')
    board.beat(s, now)
  }
  return board
}

test('ready only when the phase is running and every enabled service runs', () => {
  const now = Date.now()
  const board = runningBoard(now)
  assert.deepEqual(readiness(board, config()), { ready: true, phase: 'running', notReady: [] })
  board.setState('gateway', 'restarting')
  assert.deepEqual(readiness(board, config()).notReady, [{ service: 'gateway', state: 'restarting' }])
  assert.equal(
    readiness(board, config({ GATEWAY_ADDR: '' })).ready,
    true,
    'a disabled service does not count',
  )
  board.setState('gateway', 'running')
  board.setPhase('shutting-down')
  assert.equal(readiness(board, config()).ready, false, 'not ready from the first instant of shutdown')
})

test('a running service that reports itself degraded is not ready, and says why; liveness is unaffected', () => {
  const now = Date.now()
  const board = runningBoard(now)
  board.setDegraded('gateway', ['redis', 'sink'])
  assert.deepEqual(readiness(board, config()), {
    ready: false,
    phase: 'running',
    notReady: [{ service: 'gateway', state: 'running', degraded: 'redis,sink' }],
  })
  assert.deepEqual(liveness(board, config(), now), { alive: true, stale: [] })
  assert.equal(
    readiness(board, config({ GATEWAY_ADDR: '' })).ready,
    true,
    'a disabled service does not count',
  )
  board.setDegraded('gateway', [])
  assert.equal(readiness(board, config()).ready, true)
})

test('a running service whose heartbeat is stale (its loop blocked) is not ready either, and says so', () => {
  const now = 1_000_000
  const board = runningBoard(now)
  const c = config()
  assert.equal(readiness(board, c, now + 2500).ready, true)
  board.beat('gateway', now - 4000)
  assert.deepEqual(readiness(board, c, now), {
    ready: false,
    phase: 'running',
    notReady: [{ service: 'gateway', state: 'running', stale: true }],
  })
  assert.deepEqual(liveness(board, c, now).stale, ['gateway'], 'as liveness says')
  board.beat('gateway', now)
  assert.equal(readiness(board, c, now).ready, true, 'ready again once it beats')
})

test('liveness: a heartbeat three beats old is stale; down or restarting workers do not count', () => {
  const now = Date.now()
  const board = runningBoard(now)
  const c = config()
  assert.deepEqual(liveness(board, c, now + 2500), { alive: true, stale: [] })
  board.beat('token', now - 4000)
  assert.deepEqual(liveness(board, c, now), { alive: false, stale: ['token'] })
  board.setState('token', 'restarting')
  assert.deepEqual(
    liveness(board, c, now),
    { alive: true, stale: [] },
    'readiness reports it, liveness does not',
  )
  board.beat('supervisor', now - 5000)
  assert.deepEqual(liveness(board, c, now).stale, ['supervisor'], 'a stuck supervisor fails liveness')
})
