import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { registerLoopDelay } from '../shared/loop-delay.js'
import { Registry } from '../shared/prom.js'
import type { MetricsJson } from '../shared/protocol.js'

const longest = (json: MetricsJson) =>
  (json as unknown as { name: string; values: { value: number }[] }[]).find(
    (m) => m.name === 'sia_worker_event_loop_delay_max_seconds',
  )!.values[0]!.value

test('the longest loop block since the previous scrape: a status view reads it and leaves it for the scrape', async () => {
  const collect = registerLoopDelay(new Registry())
  await sleep(50)
  await collect(false) // a new period
  // The loop held ~150 ms by a timer's callback; the monitor's own timer then fires late, and
  // records it.
  await new Promise<void>((resolve) =>
    setTimeout(() => {
      const until = performance.now() + 150
      while (performance.now() < until) {}
      setTimeout(resolve, 50)
    }, 30),
  )
  assert.ok(longest(await collect(true)) >= 0.1, 'the status page sees the block')
  assert.ok(longest(await collect(true)) >= 0.1, 'and leaves it')
  assert.ok(longest(await collect(false)) >= 0.1, 'for the scrape')
  await sleep(50)
  assert.ok(longest(await collect(false)) < 0.1, 'which starts a new period')
})
