import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { loadConfig } from '../shared/config/load.js'
import type { Config } from '../shared/config/types.js'
import { createFailpointCounters } from '../shared/failpoints.js'
import { createStatusBoard, HEARTBEAT_MS } from '../shared/status-board.js'
import { spawnWorker } from '../supervisor/worker-handle.js'

test("a worker told to stop no longer beats: during a replacement the service's row is its successor's", async (t) => {
  const inv = loadConfig([], { HEALTH_CHECK_ADDR: '127.0.0.1:0', LOG_LEVEL: 'warn' })
  const config = (inv as { config: Config }).config
  const board = createStatusBoard()
  const h = spawnWorker('healthcheck', {
    config,
    board: board.buffer,
    failpointCounters: createFailpointCounters([]),
  })
  t.after(() => h.terminate('terminated'))
  await h.rpc.request('start', null, 10_000)
  const first = board.lastBeat('healthcheck')
  await sleep(HEARTBEAT_MS * 1.5)
  assert.ok(board.lastBeat('healthcheck') > first, 'it beats while it runs')
  await h.rpc.request('shutdown', { deadlineMs: 1000 }, 5000)
  const last = board.lastBeat('healthcheck')
  await sleep(HEARTBEAT_MS * 1.5)
  assert.equal(board.lastBeat('healthcheck'), last, 'not once told to stop')
})
