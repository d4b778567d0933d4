import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { monotonicMs } from '../shared/clock.js'
import { registerLoopDelay } from '../shared/loop-delay.js'
import { Registry } from '../shared/prom.js'
import type { MetricsJson } from '../shared/protocol.js'
import { registerEventLoopLag } from '../supervisor/loop-lag.js'

const sample = (json: MetricsJson, name: string) =>
  (json as unknown as { name: string; values: { value: number }[] }[]).find((m) => m.name === name)!
    .values[0]!.value
const longest = (json: MetricsJson) => sample(json, 'sia_worker_event_loop_delay_max_seconds')

/** The loop held ~150 ms by a timer's callback; the monitor's own timer then fires late, and records it. */
function block(): Promise<void> {
  return new Promise<void>((resolve) =>
    setTimeout(() => {
      const until = performance.now() + 150
      while (performance.now() < until) {}
      setTimeout(resolve, 50)
    }, 30),
  )
}

/** A block seen by views, left by them for the scrape, which starts a new period. */
async function heldForTheScrape(
  collect: (view: boolean) => Promise<MetricsJson>,
  longest: (j: MetricsJson) => number,
) {
  await sleep(50)
  await collect(false) // a new period
  await block()
  assert.ok(longest(await collect(true)) >= 0.1, 'the status page sees the block')
  assert.ok(longest(await collect(true)) >= 0.1, 'and leaves it')
  assert.ok(longest(await collect(false)) >= 0.1, 'for the scrape')
  await sleep(50)
  assert.ok(longest(await collect(false)) < 0.1, 'which starts a new period')
}

test('the longest loop block since the previous scrape: a status view reads it and leaves it for the scrape', () =>
  heldForTheScrape(registerLoopDelay(new Registry()), longest))

test('the main thread’s nodejs_eventloop_lag_max_seconds: a view (the status page, a HEAD) leaves it for the scrape', () =>
  heldForTheScrape(registerEventLoopLag(new Registry()), (json) =>
    sample(json, 'nodejs_eventloop_lag_max_seconds'),
  ))

test('a scrape answered after the metrics service gave up on it (a block longer than its timeout) is a view: the block is left for the next scrape', async () => {
  const collect = registerLoopDelay(new Registry())
  await sleep(50)
  await collect(false) // a new period
  await block()
  // Asked with a deadline that passed while the loop was blocked: nobody reads this answer.
  assert.ok(longest(await collect(false, monotonicMs() - 1)) >= 0.1)
  assert.ok(longest(await collect(false, monotonicMs() + 2000)) >= 0.1, 'the next scrape reports it')
  await sleep(50)
  assert.ok(longest(await collect(false, monotonicMs() + 2000)) < 0.1, 'which starts a new period')
})
