import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'
import { pino } from 'pino'
import { createRepeatGate } from '../shared/log-repeats.js'

function capture(level: string) {
  const lines: Record<string, unknown>[] = []
  const log = pino({ level, base: null }, { write: (l: string) => void lines.push(JSON.parse(l)) })
  return { log, lines }
}

const FAILED = { event: 'token.request.failed', status: 502 }

test('the first of a kind is written whole; its repeats in the window are one record with their count', () => {
  const { log, lines } = capture('info')
  let t = 0
  const gate = createRepeatGate(log, 10_000, () => t)
  for (let i = 0; i < 5; i++) gate.log('error', FAILED, { reason: `boom ${i}` }, 'token request failed')
  gate.log('warn', { event: 'token.request.rejected', status: 400 }, { reason: 'bad' }, 'client error')
  assert.deepEqual(
    lines.map((l) => [l.event, l.status, l.reason, l.repeats]),
    [
      ['token.request.failed', 502, 'boom 0', undefined],
      ['token.request.rejected', 400, 'bad', undefined],
    ],
    'another kind (another event, or status) is not held back by the first',
  )
  t = 10_000 // the window has closed: the next is written whole, after the count of the last
  gate.log('error', FAILED, { reason: 'boom 5' }, 'token request failed')
  assert.deepEqual(
    lines.slice(2).map((l) => [l.level, l.event, l.status, l.repeats, l.reason, l.msg]),
    [
      [50, 'token.request.failed', 502, 4, undefined, '4 more in 10 s: token request failed'],
      [50, 'token.request.failed', 502, undefined, 'boom 5', 'token request failed'],
    ],
  )
  gate.log('error', FAILED, {}, 'token request failed')
  gate.flush()
  assert.deepEqual(
    lines.slice(4).map((l) => [l.event, l.repeats]),
    [['token.request.failed', 1]],
    'what is counted at stop is written then',
  )
  gate.flush()
  assert.equal(lines.length, 5, 'and only once')
})

test('the count is written when the window closes, though nothing like it comes again', async () => {
  const lines: Record<string, unknown>[] = []
  const wrote = new EventTarget()
  const log = pino(
    { level: 'info', base: null },
    {
      write: (l: string) => {
        lines.push(JSON.parse(l))
        wrote.dispatchEvent(new Event('line'))
      },
    },
  )
  const gate = createRepeatGate(log, 50)
  gate.log('error', FAILED, {}, 'token request failed')
  gate.log('error', FAILED, {}, 'token request failed')
  gate.log('error', FAILED, {}, 'token request failed')
  const timer = setTimeout(() => {}, 5_000) // the gate's timer is unref'd: keep the test alive
  await once(wrote, 'line')
  clearTimeout(timer)
  assert.deepEqual(
    lines.map((l) => l.repeats),
    [undefined, 2],
  )
})

test('a window with no repeat writes nothing more', async () => {
  const { log, lines } = capture('info')
  let t = 0
  const gate = createRepeatGate(log, 100, () => t)
  gate.log('error', FAILED, {}, 'token request failed')
  t = 200
  gate.log('error', FAILED, {}, 'token request failed')
  gate.flush()
  assert.deepEqual(
    lines.map((l) => l.repeats),
    [undefined, undefined],
  )
})

test('at debug every record is written whole', () => {
  const { log, lines } = capture('debug')
  const gate = createRepeatGate(log, 10_000, () => 0)
  for (let i = 0; i < 3; i++) gate.log('error', FAILED, { reason: `boom ${i}` }, 'token request failed')
  gate.flush()
  assert.deepEqual(
    lines.map((l) => l.reason),
    ['boom 0', 'boom 1', 'boom 2'],
  )
})
