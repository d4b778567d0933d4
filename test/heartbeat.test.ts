import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { HEARTBEAT_MS } from '../shared/status-board.js'
import { spawnLoneHealthcheck } from './support/lone-worker.js'

test("a worker told to stop no longer beats: during a replacement the service's row is its successor's", async (t) => {
  const { handle: h, board } = spawnLoneHealthcheck()
  t.after(() => h.terminate('terminated'))
  await h.rpc.request('start', null, 10_000)
  const first = board.lastBeat('healthcheck')
  await sleep(HEARTBEAT_MS * 1.5)
  assert.ok(board.lastBeat('healthcheck') > first, 'it beats while it runs')
  await h.rpc.request('shutdown', { deadlineMs: 1000, replaced: false }, 5000)
  const last = board.lastBeat('healthcheck')
  await sleep(HEARTBEAT_MS * 1.5)
  assert.equal(board.lastBeat('healthcheck'), last, 'not once told to stop')
})
