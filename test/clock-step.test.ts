import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { startReady, stop } from './support/sidecar.js'

/**
 * The wall clock is not the supervisor's clock: an NTP step or a VM's resume moves `Date.now()`,
 * and heartbeats, the watchdog, liveness and the shutdown budget must not move with it. libfaketime
 * (Debian's faketime, which .ci/run installs) runs this process's wall clock 20 times too fast and
 * leaves the monotonic clock alone: each one-second heartbeat then looks 20 s apart on the wall.
 */
const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1'

test('a wall clock that runs 20 times too fast: no watchdog, liveness 200, a clean shutdown', async (t) => {
  if (!existsSync(LIBFAKETIME)) return t.skip(`${LIBFAKETIME} not found (apt-get install faketime)`)
  const dir = mkdtempSync(join(tmpdir(), 'sia-clock-'))
  const clock = join(dir, 'faketime')
  writeFileSync(clock, '+0 x20\n')
  const config = join(dir, 'sia.json')
  // The shortest watchdog: every worker's heartbeat is read every 2 s.
  const tuning = { watchdogTimeout: '2s' }
  writeFileSync(
    config,
    JSON.stringify({
      services: Object.fromEntries(
        ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck'].map((s) => [
          s,
          tuning,
        ]),
      ),
    }),
  )
  const sc = await startReady({
    args: ['--config', config],
    env: { LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: clock, DONT_FAKE_MONOTONIC: '1' },
  })
  const healthz = `${await sc.url('healthcheck')}/healthz`
  // Three watchdog rounds: on the wall clock, a minute and a half.
  for (let i = 0; i < 12; i++) {
    await sleep(500)
    const res = await fetch(healthz)
    assert.equal(res.status, 200, await res.text())
  }
  assert.deepEqual(
    sc.records
      .filter((r) => r.event === 'worker.watchdog' || r.event === 'worker.crashed')
      .map((r) => r.service),
    [],
  )
  assert.equal(await stop(sc), 0)
})
