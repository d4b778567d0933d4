import assert from 'node:assert/strict'
import type { LogRecord } from './sidecar.js'

export const ORDER = ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck']

/** Asserts the shape every run must have, whatever stopped it (DESIGN.md §1–§3). */
export function assertLifecycle(records: LogRecord[], services = ORDER): void {
  const lifecycle = (event: string) => records.filter((r) => r.event === event).map((r) => r.service)

  // Every service gets shutdown.begin and shutdown.done, in reverse order, each done before the next begins.
  const reversed = [...services].reverse()
  assert.deepEqual(lifecycle('service.shutdown.begin'), reversed, 'shutdown.begin in reverse order')
  assert.deepEqual(lifecycle('service.shutdown.done'), reversed, 'shutdown.done in reverse order')
  const steps = records.filter(
    (r) => r.event === 'service.shutdown.begin' || r.event === 'service.shutdown.done',
  )
  for (let i = 0; i < steps.length; i += 2) {
    assert.equal(steps[i]!.event, 'service.shutdown.begin')
    assert.equal(steps[i + 1]!.event, 'service.shutdown.done')
    assert.equal(steps[i]!.service, steps[i + 1]!.service, 'one service stops at a time')
  }

  // Every task that started stopped, and nothing was created after shutdown began.
  const key = (r: LogRecord) => `${r.service}/${r.task as string}`
  const started = records.filter((r) => r.event === 'service.task.started').map(key)
  const stopped = records.filter((r) => r.event === 'service.task.stopped').map(key)
  assert.deepEqual([...stopped].sort(), [...started].sort(), 'every task.started has its task.stopped')

  // The run was cancelled exactly once, before shutdown, and the process said how it exits.
  assert.equal(lifecycle('supervisor.cancelled').length, 1, 'one supervisor.cancelled')
  const cancelledAt = records.findIndex((r) => r.event === 'supervisor.cancelled')
  const firstStop = records.findIndex((r) => r.event === 'service.shutdown.begin')
  assert.ok(cancelledAt < firstStop, 'cancelled (readiness dropped) before the first service stops')
  assert.equal(records.at(-1)?.event, 'supervisor.exit', 'supervisor.exit is the last record')

  for (const r of records) {
    assert.ok(
      r.time && r.level && r.service && typeof r.msg === 'string',
      `record has time, level, service, msg: ${JSON.stringify(r)}`,
    )
  }
}

/** Services whose start ran to the end, failed, or was skipped, in log order. */
export function startOutcomes(records: LogRecord[]): Record<string, string[]> {
  const pick = (event: string) => records.filter((r) => r.event === event).map((r) => r.service)
  return {
    done: pick('service.start.done'),
    failed: pick('service.start.failed'),
    skipped: pick('service.start.skipped'),
  }
}
