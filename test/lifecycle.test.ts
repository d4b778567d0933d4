import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { assertLifecycle, ORDER, startOutcomes } from './support/lifecycle.js'
import { startReady, startSidecar, stop } from './support/sidecar.js'

/**
 * The seed table (cases 000–015) extended to all six services: each case drives one failpoint
 * from the outside and checks exit code, which services started, failed or were skipped, and
 * that every service was shut down in reverse order with every task stopped.
 */
interface Case {
  id: string
  failpoints: string
  exitCode: number
  /** Services that start to the end (in order); the rest are skipped or failed. */
  done: string[]
  failed?: string
}

const before = (i: number) => ORDER.slice(0, i)
const cases: Case[] = [
  ...ORDER.map((s, i) => ({
    id: `before-start:${s}`,
    failpoints: `supervisor.before-start:${s}=sigint`,
    exitCode: 0,
    done: before(i),
  })),
  ...[
    ['certificate', 'refresh-timer'],
    ['token', 'server'],
    ['token', 'refresh-timer'],
    ['memory-reporter', 'reporter'],
    ['gateway', 'server'],
    ['metrics', 'server'],
    ['healthcheck', 'server'],
  ].map(([s, task]) => ({
    id: `before-task:${s}:${task}`,
    failpoints: `${s}.before-task:${task}=sigint`,
    exitCode: 0,
    // "finish the whole code block": the service whose task saw the signal still starts.
    done: before(ORDER.indexOf(s!) + 1),
  })),
  ...ORDER.map((s, i) => ({
    id: `${s}.start=error`,
    failpoints: `${s}.start=error`,
    exitCode: 1,
    done: before(i),
    failed: s,
  })),
  {
    // The supervisor's own step before a start fails: that start failed, and is not also skipped.
    // The run is cancelled by then: metrics is skipped, its own step never reached.
    id: 'supervisor.before-start:token=error (and :metrics=error, never reached)',
    failpoints: 'supervisor.before-start:token=error;supervisor.before-start:metrics=error',
    exitCode: 1,
    done: before(1),
    failed: 'token',
  },
  {
    id: 'metrics.start=error + sigint during shutdown (015)',
    failpoints: 'metrics.start=error;supervisor.during-shutdown=sigint',
    exitCode: 1,
    done: before(4),
    failed: 'metrics',
  },
]

// Event order only, no clock: three sidecars at a time.
describe('seed table', { concurrency: 3 }, () => {
  test('000: SIGINT after every service started → all stop in reverse order, exit 0', async () => {
    const sc = await startReady()
    assert.equal(await stop(sc, 'SIGINT'), 0)
    assertLifecycle(sc.records)
    assert.deepEqual(startOutcomes(sc.records), { done: ORDER, failed: [], skipped: [] })
    assert.deepEqual(sc.events('supervisor.cancelled')[0]?.signal, 'SIGINT')
    assert.deepEqual(sc.events('supervisor.exit')[0], {
      ...sc.events('supervisor.exit')[0],
      code: 0,
      cause: 'signal',
    })
    assert.deepEqual(sc.junk, [], 'stdout holds only JSON lines')
  })

  for (const c of cases) {
    test(`${c.id} → exit ${c.exitCode}`, async () => {
      const sc = startSidecar({ env: { SIA_FAILPOINTS: c.failpoints } })
      const { code } = await sc.exited
      assert.equal(code, c.exitCode, sc.stderr())
      assertLifecycle(sc.records)
      const outcome = startOutcomes(sc.records)
      assert.deepEqual(outcome.done, c.done, JSON.stringify(sc.events('service.start.failed')))
      assert.deepEqual(outcome.failed, c.failed ? [c.failed] : [])
      const rest = ORDER.filter((s) => !c.done.includes(s) && s !== c.failed)
      assert.deepEqual(outcome.skipped, rest, 'services after the failing point are skipped')
      const cancelled = sc.events('supervisor.cancelled')[0]
      if (c.failed) assert.deepEqual([cancelled?.cause, cancelled?.service], ['start-failed', c.failed])
      else assert.deepEqual([cancelled?.cause, cancelled?.signal], ['signal', 'SIGINT'])
      if (c.id.includes('015')) {
        assert.deepEqual(
          sc.events('supervisor.signal.ignored').map((r) => r.signal),
          ['SIGINT'],
          'the SIGINT during shutdown is logged and ignored',
        )
      }
    })
  }
})
