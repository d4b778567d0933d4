import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { chownSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, type TestContext, test } from 'node:test'
import { alert, metric, post, SIGNALS, webhook } from './support/gateway.js'
import { CLI, type LogRecord, type Sidecar, startSidecar } from './support/sidecar.js'

/**
 * A worker thread that cannot be made: `new Worker()` throws ERR_WORKER_INIT_FAILED (EAGAIN) when
 * the pod's pids limit is reached. The sidecar runs as a user of its own (no other process counts
 * against that user's RLIMIT_NPROC), and the limit is set to the threads it has: the next thread
 * it asks for is refused, as at the pids limit. Root is exempt from the limit, and only root can
 * start a process as another user: elsewhere these tests are skipped.
 */

const SERVICES = ['memory-reporter', 'gateway', 'metrics']
const THREAD_LIMIT = new URL('./support/thread-limit.js', import.meta.url).pathname

function cannotLimitThreads(): string | undefined {
  if (process.platform !== 'linux') return 'RLIMIT_NPROC per user and /proc need Linux'
  if (process.getuid?.() !== 0) return 'running the sidecar as a user of its own needs root'
  const r = spawnSync(
    'setpriv',
    [...asUser(nextUser()), process.execPath, '-e', `require('node:fs').accessSync(${JSON.stringify(CLI)})`],
    { encoding: 'utf8', timeout: 10_000 },
  )
  if (r.status !== 0) return `setpriv cannot run the CLI as another user: ${r.error?.message ?? r.stderr}`
  if (spawnSync('prlimit', ['--version']).status !== 0) return 'prlimit is not installed'
  return undefined
}

/** A user id no other process has. */
let user = 200_000 + (process.pid % 10_000) * 50
const nextUser = () => ++user
const asUser = (uid: number) => [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--']

/**
 * The gateway, the memory reporter and the metrics service (the certificate and token services
 * spend seconds on keys for nothing here), as a user of its own.
 */
function start(
  t: TestContext,
  env: Record<string, string>,
  gateway: object = {},
): { sc: Sidecar; uid: number } {
  const uid = nextUser()
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-spawn-failure-'))
  chownSync(dataDir, uid, uid)
  const config = join(dataDir, 'config.json')
  const services = { certificate: { enabled: false }, token: { enabled: false }, gateway }
  writeFileSync(config, JSON.stringify({ services }))
  const sc = startSidecar({
    dataDir,
    env: {
      SIA_CONFIG_FILE: config,
      TOKEN_SERVER_ADDR: '',
      HEALTH_CHECK_ADDR: '',
      SHUTDOWN_TIMEOUT: '3s',
      // Its cache under the temporary directory is root's: not written, and said on stderr.
      NODE_DISABLE_COMPILE_CACHE: '1',
      ...env,
    },
    command: (node, argv) => ({ file: 'setpriv', args: [...asUser(uid), node, ...argv], cwd: dataDir }),
  })
  t.after(() => sc.kill('SIGKILL'))
  return { sc, uid }
}

/**
 * From now on the sidecar can make `spare` more threads (and one more for each that ends). Set by
 * its own user: root may not (no CAP_SYS_RESOURCE in a container).
 */
function limitThreads({ sc, uid }: { sc: Sidecar; uid: number }, spare = 0): void {
  const pid = sc.proc.pid!
  const threads = readdirSync(`/proc/${pid}/task`).length
  execFileSync('setpriv', [...asUser(uid), 'prlimit', `--pid=${pid}`, `--nproc=${threads + spare}`])
}

const of = (sc: Sidecar, event: string) => sc.events(event).map((r) => r.service)
const exitRecord = (sc: Sidecar) => sc.events('supervisor.exit').map(({ code, cause }) => ({ code, cause }))

/** The end of every run: each service stopped, supervisor.exit last, no crash of the process. */
function assertOrderlyEnd(sc: Sidecar, exit: { code: number | null }, code: number, cause: string): void {
  assert.deepEqual(exitRecord(sc), [{ code, cause }])
  assert.equal(sc.records.at(-1)?.event, 'supervisor.exit')
  assert.equal(exit.code, code)
  assert.deepEqual(of(sc, 'service.shutdown.done').sort(), [...SERVICES].sort())
  assert.doesNotMatch(sc.stderr(), /ERR_WORKER_INIT_FAILED|EAGAIN/, 'nothing thrown past the supervisor')
}

const assertSpawnFailed = (r: LogRecord) => {
  assert.equal(r.reason, 'spawn-failed')
  assert.equal((r.err as { code?: string }).code, 'ERR_WORKER_INIT_FAILED')
}

describe('a worker thread that cannot be made (EAGAIN at the pids limit)', {
  skip: cannotLimitThreads(),
}, () => {
  test("a restart's thread: a fault of that service (back-off, then a crash loop), the others serve, exit 1 through the shutdown", async (t) => {
    // Two faults in the window are allowed, the second restart is 1-2 s away: time to look.
    const run = start(
      t,
      { SIA_FAILPOINTS: 'gateway.before-sink=1*crash' },
      { maxRestarts: 2, restartBackoff: '2s' },
    )
    const { sc } = run
    await sc.waitForEvent('supervisor.ready', {}, 60_000)
    const metrics = await sc.url('metrics')
    // The thread the crash ends cannot be made again.
    limitThreads(run, -1)
    // Answered by no one: the worker dies before its sink write.
    await fetch(`${await sc.url('gateway')}${SIGNALS}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(webhook([alert('Crash')])),
      signal: AbortSignal.timeout(10_000),
    }).catch(() => {})
    const failed = await sc.waitForEvent('worker.crashed', { reason: 'spawn-failed' })
    assertSpawnFailed(failed)
    assert.equal(failed.service, 'gateway')
    const restarting = await sc.waitForEvent('worker.restarting', { attempt: 2 })
    assert.equal(restarting.reason, 'spawn-failed')

    // In its back-off the others serve, and count the restart under its reason.
    const scrape = await fetch(`${metrics}/metrics`, { signal: AbortSignal.timeout(5000) })
    assert.equal(scrape.status, 200)
    const text = await scrape.text()
    assert.equal(metric(text, 'sia_worker_restarts_total', { service: 'gateway', reason: 'spawn-failed' }), 1)
    assert.equal(metric(text, 'sia_worker_up', { service: 'memory-reporter' }), 1)

    const exit = await sc.exited
    assert.deepEqual(
      sc.events('worker.crashed').map((r) => [r.service, r.reason]),
      [
        ['gateway', 'exception'],
        ['gateway', 'spawn-failed'],
        ['gateway', 'spawn-failed'],
      ],
    )
    assert.deepEqual(of(sc, 'worker.restarting'), ['gateway', 'gateway'])
    assert.deepEqual(of(sc, 'worker.crash-loop'), ['gateway'])
    assert.deepEqual(
      sc.events('supervisor.cancelled').map(({ cause, service }) => ({ cause, service })),
      [{ cause: 'crash-loop', service: 'gateway' }],
    )
    assertOrderlyEnd(sc, exit, 1, 'crash-loop')
  })

  test("a reload's successors: each replacement fails, the workers that serve stay, SIGTERM exits 0", async (t) => {
    const run = start(t, {})
    const { sc } = run
    await sc.waitForEvent('supervisor.ready', {}, 60_000)
    const gateway = await sc.url('gateway')
    limitThreads(run)
    sc.kill('SIGHUP')
    const done = await sc.waitForEvent('supervisor.reload.failed', {}, 15_000)
    assert.deepEqual(
      done.outcomes,
      SERVICES.map((service) => ({ service, outcome: 'failed' })),
    )
    assert.deepEqual(
      sc.events('worker.replace.failed').map((r) => [r.service, (r.err as { code?: string }).code]),
      SERVICES.map((service) => [service, 'ERR_WORKER_INIT_FAILED']),
    )
    assert.deepEqual(of(sc, 'worker.crashed'), [], 'no fault of a worker that serves')

    assert.equal((await post(gateway, webhook([alert('AfterReload')]))).status, 201)
    sc.kill('SIGTERM')
    assertOrderlyEnd(sc, await sc.exited, 0, 'signal')
  })

  test('at boot: every service is down, the first start fails, exit 1 through the shutdown', async (t) => {
    const { sc } = start(t, { NODE_OPTIONS: `--import=${THREAD_LIMIT}` })
    const exit = await sc.exited
    for (const r of sc.events('worker.crashed')) assertSpawnFailed(r)
    assert.deepEqual(of(sc, 'worker.crashed'), SERVICES)
    assert.deepEqual(of(sc, 'service.start.failed'), ['memory-reporter'])
    assert.deepEqual(of(sc, 'service.start.skipped'), ['gateway', 'metrics'])
    assertOrderlyEnd(sc, exit, 1, 'start-failed')
  })
})
