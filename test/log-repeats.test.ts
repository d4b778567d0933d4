import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'
import { pino } from 'pino'
import { createRepeatGate, VARIANTS_PER_WINDOW } from '../shared/log-repeats.js'
import { startReady, stop } from './support/sidecar.js'

/** The token service alone: the other servers cost the test's boot and say nothing here. */
const ONLY_TOKEN = { GATEWAY_ADDR: '', METRICS_SERVER_ADDR: '', HEALTH_CHECK_ADDR: '' }

function capture(level: string) {
  const lines: Record<string, unknown>[] = []
  const wrote = new EventTarget()
  const log = pino(
    { level, base: null },
    {
      write: (l: string) => {
        lines.push(JSON.parse(l))
        wrote.dispatchEvent(new Event('line'))
      },
    },
  )
  return { log, lines, wrote }
}

const FAILED = { event: 'token.request.failed', status: 502 }
const REJECTED = { event: 'token.request.rejected', status: 400 }

test('the first of a kind is written whole; its repeats in the window are one record with their count', () => {
  const { log, lines } = capture('info')
  let t = 0
  const gate = createRepeatGate(log, 10_000, () => t)
  for (let i = 0; i < 5; i++)
    gate.log('error', FAILED, 'ZTS answered 500', { reason: `boom ${i}` }, 'token request failed')
  gate.log('warn', REJECTED, 'bad', { reason: 'bad' }, 'client error')
  assert.deepEqual(
    lines.map((l) => [l.event, l.status, l.reason, l.repeats]),
    [
      ['token.request.failed', 502, 'boom 0', undefined],
      ['token.request.rejected', 400, 'bad', undefined],
    ],
    'another kind (another event, or status) is not held back by the first',
  )
  t = 10_000 // the window has closed: the next is written whole, after the count of the last
  gate.log('error', FAILED, 'ZTS answered 500', { reason: 'boom 5' }, 'token request failed')
  assert.deepEqual(
    lines.slice(2).map((l) => [l.level, l.event, l.status, l.repeats, l.reason, l.msg]),
    [
      [50, 'token.request.failed', 502, 4, undefined, '4 more in 10 s: token.request.failed 502'],
      [50, 'token.request.failed', 502, undefined, 'boom 5', 'token request failed'],
    ],
  )
  gate.log('error', FAILED, 'ZTS answered 500', {}, 'token request failed')
  gate.flush()
  assert.deepEqual(
    lines.slice(4).map((l) => [l.event, l.repeats]),
    [['token.request.failed', 1]],
    'what is counted at stop is written then',
  )
})

test('another variant of a kind is written whole, up to a few a window: one client looping does not hide another', () => {
  const { log, lines } = capture('info')
  const gate = createRepeatGate(log, 10_000, () => 0)
  for (let i = 0; i < 50; i++)
    gate.log('warn', REJECTED, 'invalid JSON', { reason: 'invalid JSON' }, 'client error')
  gate.log('warn', REJECTED, 'expiry must be a whole number', { reason: 'expiry' }, 'client error')
  for (let v = 0; v < 2 * VARIANTS_PER_WINDOW; v++)
    gate.log('warn', REJECTED, `variant ${v}`, { reason: v }, 'client error')
  gate.flush()
  const whole = lines.filter((l) => l.repeats === undefined)
  assert.deepEqual(
    whole.map((l) => l.reason),
    ['invalid JSON', 'expiry', ...Array.from({ length: VARIANTS_PER_WINDOW - 2 }, (_, v) => v)],
  )
  assert.deepEqual(
    lines.filter((l) => l.repeats !== undefined).map((l) => l.repeats),
    [49 + VARIANTS_PER_WINDOW + 2],
    'the rest counted',
  )
})

test('the count is written when the window closes, though nothing like it comes again', async () => {
  const { log, lines, wrote } = capture('info')
  const gate = createRepeatGate(log, 50)
  for (let i = 0; i < 3; i++) gate.log('error', FAILED, 'x', {}, 'token request failed')
  const timer = setTimeout(() => {}, 5_000) // the gate's timer is unref'd: keep the test alive
  await once(wrote, 'line') // the first, written whole at once
  if (lines.length < 2) await once(wrote, 'line')
  clearTimeout(timer)
  assert.deepEqual(
    lines.map((l) => l.repeats),
    [undefined, 2],
  )
})

test('a window with no repeat writes nothing more', () => {
  const { log, lines } = capture('info')
  let t = 0
  const gate = createRepeatGate(log, 100, () => t)
  gate.log('error', FAILED, 'x', {}, 'token request failed')
  t = 200
  gate.log('error', FAILED, 'x', {}, 'token request failed')
  gate.flush()
  assert.deepEqual(
    lines.map((l) => l.repeats),
    [undefined, undefined],
  )
})

test('once flushed (the stop), every record is written whole: no window would close for it', () => {
  const { log, lines } = capture('info')
  const gate = createRepeatGate(log, 10_000, () => 0)
  gate.log('error', FAILED, 'x', {}, 'token request failed')
  gate.flush()
  gate.log('error', FAILED, 'x', { n: 1 }, 'token request failed')
  gate.log('error', FAILED, 'x', { n: 2 }, 'token request failed')
  assert.deepEqual(
    lines.map((l) => [l.n, l.repeats]),
    [
      [undefined, undefined],
      [1, undefined],
      [2, undefined],
    ],
  )
})

test('at debug every record is written whole; below its level none is, and nothing is counted', () => {
  const debug = capture('debug')
  const gate = createRepeatGate(debug.log, 10_000, () => 0)
  for (let i = 0; i < 3; i++) gate.log('error', FAILED, 'x', { reason: `boom ${i}` }, 'token request failed')
  gate.flush()
  assert.deepEqual(
    debug.lines.map((l) => l.reason),
    ['boom 0', 'boom 1', 'boom 2'],
  )
  const quiet = capture('warn')
  const quietGate = createRepeatGate(quiet.log, 10_000, () => 0)
  for (let i = 0; i < 3; i++)
    quietGate.log('info', { event: 'token.request', status: 502 }, 'x', {}, 'GET / 502')
  quietGate.flush()
  assert.deepEqual(quiet.lines, [])
})

test("a worker that dies of an uncaught exception still writes its window's counts before it ends", async (t) => {
  // The crash strikes at the start of the token service's shutdown, before any cleanup runs.
  const sc = await startReady({ env: { SIA_FAILPOINTS: 'token.shutdown=crash', ...ONLY_TOKEN } })
  t.after(() => stop(sc, 'SIGKILL'))
  const base = await sc.url('token')
  const invalid = 40
  const statuses = await Promise.all(
    Array.from({ length: invalid }, async () => {
      const res = await fetch(`${base}/roletoken`, { method: 'POST', body: '{"domain":"demo..x"}' })
      await res.arrayBuffer()
      return res.status
    }),
  )
  assert.deepEqual(statuses, Array(invalid).fill(400))
  assert.equal(await stop(sc), 1, 'a worker that crashed in its shutdown: unclean')
  const crashed = sc.events('worker.crashed').find((r) => r.service === 'token')
  assert.ok(crashed, 'the token worker crashed')
  const rejected = sc.events('token.request.rejected')
  assert.equal(
    rejected.reduce((n, r) => n + ((r.repeats as number | undefined) ?? 1), 0),
    invalid,
    'every rejection is told, the ones counted in the open window too',
  )
  assert.ok(rejected.length <= 3, `counted, not written one by one (${rejected.length} records)`)
  assert.ok(
    sc.records.indexOf(rejected.at(-1)!) < sc.records.indexOf(crashed),
    'written by the dying thread, before the supervisor says it ended',
  )
})
