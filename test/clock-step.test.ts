import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { alert, gatewayEnv, post, webhook } from './support/gateway.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'
import { fillDisk, smallTmpfs } from './support/tmpfs.js'

/**
 * The wall clock is not the supervisor's clock: an NTP step or a VM's resume moves `Date.now()`,
 * and heartbeats, the watchdog, liveness and the shutdown budget must not move with it. libfaketime
 * (Debian's faketime, which .ci/run installs) runs this process's wall clock 20 times too fast and
 * leaves the monotonic clock alone: each one-second heartbeat then looks 20 s apart on the wall.
 */
const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1'

// Each test has its own sidecar and waits out its clock: the two side by side.
describe('a wall clock that is not steady', { concurrency: 2 }, () => {
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

  test('a wall clock stepped back an hour after the token files failed: the next refresh still comes an interval after the last fetch', async (t) => {
    if (!existsSync(LIBFAKETIME)) return t.skip(`${LIBFAKETIME} not found (apt-get install faketime)`)
    const dir = mkdtempSync(join(tmpdir(), 'sia-clock-'))
    const clock = join(dir, 'faketime')
    writeFileSync(clock, '+0\n')
    const sc = await startReady({
      dataDir: dir,
      env: {
        LD_PRELOAD: LIBFAKETIME,
        FAKETIME_TIMESTAMP_FILE: clock,
        DONT_FAKE_MONOTONIC: '1',
        FAKETIME_NO_CACHE: '1',
        GATEWAY_ADDR: '',
        TARGET_DOMAIN_ROLES: 'demo:role.reader',
        TOKEN_DIR: join(dir, 'tokens'),
        TOKEN_REFRESH_INTERVAL: '9s',
        // The boot's write of the token files fails: the retry (~4-5 s) writes only them.
        SIA_FAILPOINTS: 'token.before-write=1*error',
      },
    })
    t.after(() => stop(sc, 'SIGKILL'))
    writeFileSync(clock, '-1h\n') // an NTP step back, before the retry
    await sc.waitForEvent('token.files.recovered', {}, 15_000)
    // The interval counts from the boot's fetch on the monotonic clock, not from a wall-clock
    // reading an hour off: a refresh within 9 s of the boot, not an hour later.
    const refreshed = await sc.waitForCount('token.cache.updated', 2, {}, 15_000)
    assert.equal((refreshed.roletoken as { updated: number }).updated, 1)
    assert.equal(await stop(sc), 0)
  })

  test('a wall clock stepped back an hour while the disk is full: the sink and the log file come back once it has room', async (t) => {
    if (!existsSync(LIBFAKETIME)) return t.skip(`${LIBFAKETIME} not found (apt-get install faketime)`)
    let sc: Sidecar | undefined
    const mnt = smallTmpfs(t, 'sia-clock-full-', async () => sc && stop(sc, 'SIGKILL'))
    if (!mnt) return
    const clock = join(mkdtempSync(join(tmpdir(), 'sia-clock-')), 'faketime')
    writeFileSync(clock, '+0\n')
    sc = await startReady({
      env: gatewayEnv({
        GATEWAY_SINK_FILE: join(mnt, 'alerts.jsonl'),
        LOG_DIR: join(mnt, 'logs'),
        MEMORY_REPORT_INTERVAL: '100ms', // a line a tenth of a second for the log file
        LD_PRELOAD: LIBFAKETIME,
        FAKETIME_TIMESTAMP_FILE: clock,
        FAKETIME_NO_CACHE: '1', // the file is read at every call: the step is seen at once
        DONT_FAKE_MONOTONIC: '1',
      }),
    })
    const base = await sc.url('gateway')
    assert.equal((await post(base, webhook([alert('BeforeFull')]))).status, 201)
    assert.equal(fillDisk(mnt), 'ENOSPC')
    const big = alert('WhileFull', { annotations: { description: 'x'.repeat(8 * 1024) } })
    assert.equal((await post(base, webhook([big]))).status, 503)
    await sc.waitForEvent('gateway.sink.failed')
    await sc.waitForEvent('log.file.failed')

    // Back an hour (an NTP step, a VM's resume): the sink's probe and the log file's retry are
    // intervals, which the wall clock would put an hour away.
    writeFileSync(clock, '-1h\n')
    await sleep(300)
    rmSync(join(mnt, 'filler'))
    await sc.waitForEvent('gateway.ready-again', {}, 10_000)
    await sc.waitForEvent('log.file.recovered', {}, 15_000)
    assert.equal((await post(base, webhook([big]))).status, 201)
    assert.equal(await stop(sc), 0)
  })
})
