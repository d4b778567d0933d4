import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { startReady, stop } from './support/sidecar.js'

/**
 * The certificate's schedule is planned on the wall clock (a certificate's validity is told in
 * it) and slept on the monotonic timer. libfaketime (as in clock-step.test.ts) steps the
 * sidecar's wall clock and leaves the monotonic clock alone: an NTP step, a VM's resume.
 */
const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1'

const certOf = (dir: string) => new X509Certificate(readFileSync(join(dir, 'cert.pem'), 'utf8'))

/** A sidecar on the local provider whose wall clock starts at `start` (a faketime offset). */
async function clockedSidecar(start: string, env: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'sia-cert-clock-'))
  const clock = join(dir, 'faketime')
  writeFileSync(clock, `${start}\n`)
  const sc = await startReady({
    dataDir: dir,
    env: {
      GATEWAY_ADDR: '',
      LD_PRELOAD: LIBFAKETIME,
      FAKETIME_TIMESTAMP_FILE: clock,
      FAKETIME_NO_CACHE: '1', // the file is read at every call: the step is seen at once
      DONT_FAKE_MONOTONIC: '1',
      ...env,
    },
  })
  return { sc, dir, step: (to: string) => writeFileSync(clock, `${to}\n`) }
}

// Each test waits out a slice of the schedule (10 s) beside the others.
describe('the certificate schedule and the wall clock', { concurrency: 3 }, () => {
  test('REFRESH_INTERVAL=0 with the local provider: the hour-long certificate is still renewed before it expires', async (t) => {
    if (!existsSync(LIBFAKETIME)) return t.skip(`${LIBFAKETIME} not found (apt-get install faketime)`)
    const { sc, dir, step } = await clockedSidecar('+0', { REFRESH_INTERVAL: '0' })
    t.after(() => stop(sc, 'SIGKILL'))
    const first = certOf(dir)
    // 45 minutes on: past half-way through its hour, it is due half-way through what is left.
    step('+45m')
    const planned = await sc.waitForEvent('certificate.clock.stepped', {}, 30_000)
    assert.equal(planned.outsideValidity, false)
    const nextInMs = planned.nextInMs as number
    assert.ok(nextInMs > 6 * 60_000 && nextInMs <= 7.5 * 60_000, `next in ${nextInMs}ms`)
    // 20 s before it expires (within the 30 s margin): renewed at once, never let expire.
    const endsIn = Math.floor((Date.parse(first.validTo) - Date.now()) / 1000) - 20
    step(`+${endsIn}`)
    await sc.waitForCount('certificate.issued', 2, { kind: 'instance' }, 30_000)
    const next = certOf(dir)
    assert.notEqual(next.serialNumber, first.serialNumber)
    assert.ok(Date.parse(next.validTo) > Date.parse(first.validTo) + 30 * 60_000, next.validTo)
    assert.equal(await stop(sc), 0)
  })

  test('a wall clock stepped 5 h forward, past the end of a certificate due in 2 h: refreshed at once', async (t) => {
    if (!existsSync(LIBFAKETIME)) return t.skip(`${LIBFAKETIME} not found (apt-get install faketime)`)
    const { sc, dir, step } = await clockedSidecar('+0', { REFRESH_INTERVAL: '2h' })
    t.after(() => stop(sc, 'SIGKILL'))
    const first = certOf(dir) // the local authority's: twice the interval, 4 h
    step('+5h')
    const stepped = await sc.waitForEvent('certificate.clock.stepped', {}, 30_000)
    assert.equal(stepped.outsideValidity, true)
    await sc.waitForCount('certificate.issued', 2, { kind: 'instance' }, 30_000)
    const next = certOf(dir)
    // Valid on the stepped clock: from after the first one's end.
    assert.ok(Date.parse(next.validTo) > Date.parse(first.validTo) + 60 * 60_000, next.validTo)
    assert.equal(await stop(sc), 0)
  })

  test('a boot with the wall clock 2 days ahead, then corrected: the certificate not valid yet is refreshed at once', async (t) => {
    if (!existsSync(LIBFAKETIME)) return t.skip(`${LIBFAKETIME} not found (apt-get install faketime)`)
    const { sc, dir, step } = await clockedSidecar('+2d', { REFRESH_INTERVAL: '2h' })
    t.after(() => stop(sc, 'SIGKILL'))
    const first = certOf(dir)
    assert.ok(Date.parse(first.validFrom) > Date.now() + 24 * 3600_000, first.validFrom)
    step('+0')
    const stepped = await sc.waitForEvent('certificate.clock.stepped', {}, 30_000)
    assert.equal(stepped.outsideValidity, true)
    await sc.waitForCount('certificate.issued', 2, { kind: 'instance' }, 30_000)
    const next = certOf(dir)
    assert.ok(Date.parse(next.validFrom) <= Date.now(), `valid from ${next.validFrom}`)
    assert.ok(Date.parse(next.validTo) > Date.now(), `valid to ${next.validTo}`)
    assert.equal(await stop(sc), 0)
  })
})
