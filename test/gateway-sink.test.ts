import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { type AlertInput, alert, gatewayEnv, post, readJsonLines, webhook } from './support/gateway.js'
import { freePort } from './support/ports.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'
import { fillDisk, smallTmpfs } from './support/tmpfs.js'

/** The file sink never holds a torn line (DESIGN.md §7), through the built CLI. */

async function launch(t: TestContext, env: Record<string, string>): Promise<Sidecar> {
  const sc = await startReady({ env: gatewayEnv(env) })
  t.after(() => stop(sc, 'SIGKILL'))
  return sc
}

/** Every line of the file is a whole JSON record, and the file ends on a newline. */
function assertWholeLines(path: string): Record<string, unknown>[] {
  const text = readFileSync(path, 'utf8')
  assert.ok(text === '' || text.endsWith('\n'), `the file ends mid-line: …${JSON.stringify(text.slice(-40))}`)
  return readJsonLines(path) // throws on a line that is not JSON
}

test('a partial trailing line left by a crash is cut back at start, and logged', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-sink-'))
  const sinkFile = join(dir, 'alerts.jsonl')
  const whole = `${JSON.stringify({ fingerprint: 'before-1' })}\n${JSON.stringify({ fingerprint: 'before-2' })}\n`
  const torn = '{"fingerprint":"torn-3","alertname":"Cut'
  writeFileSync(sinkFile, whole + torn)

  const sc = await launch(t, { GATEWAY_SINK_FILE: sinkFile })
  const repaired = await sc.waitForEvent('gateway.sink.repaired')
  assert.equal(repaired.bytes, Buffer.byteLength(torn))
  assert.equal(repaired.level, 'warn')
  assert.equal(readFileSync(sinkFile, 'utf8'), whole, 'cut back to the last newline')

  assert.equal((await post(await sc.url('gateway'), webhook([alert('AfterRepair')]))).status, 201)
  const lines = assertWholeLines(sinkFile)
  assert.deepEqual(
    lines.map((l) => l.alertname ?? l.fingerprint),
    ['before-1', 'before-2', 'AfterRepair'],
  )
  assert.equal(await stop(sc), 0)
  // A clean file is left alone at the next start.
  const again = await launch(t, { GATEWAY_SINK_FILE: sinkFile })
  assert.equal(await stop(again), 0)
  assert.equal(again.events('gateway.sink.repaired').length, 0)
})

test('disk full, then freed: 5xx while full, never a torn line, every 2xx alert stored', async (t) => {
  let sc: Sidecar | undefined
  // The mount is busy while the sink file is open: the sidecar goes first.
  const mnt = smallTmpfs(t, 'sia-full-', async () => sc && stop(sc, 'SIGKILL'))
  if (!mnt) return
  const sinkFile = join(mnt, 'alerts.jsonl')
  sc = await launch(t, { GATEWAY_SINK_FILE: sinkFile })
  const base = await sc.url('gateway')
  // 6 KiB of annotations: every record needs pages of its own, so a full disk cannot hide it.
  const big = (name: string): AlertInput =>
    alert(name, { annotations: { summary: `${name} is firing`, description: 'x'.repeat(6 * 1024) } })
  const stored = new Set<string>()
  const send = async (name: string) => {
    const r = await post(base, webhook([big(name)]))
    if (r.status >= 200 && r.status < 300) stored.add(name)
    return r
  }

  for (const name of ['Room1', 'Room2', 'Room3']) assert.equal((await send(name)).status, 201)

  // Fill the file system.
  const filler = join(mnt, 'filler')
  assert.equal(fillDisk(mnt), 'ENOSPC')

  const whileFull: number[] = []
  for (const name of ['Full1', 'Full2', 'Full3', 'Full4']) {
    const r = await send(name)
    whileFull.push(r.status)
    assert.equal(r.status, 503, `${name}: ${JSON.stringify(r.body)}`)
    assert.equal(r.headers.get('retry-after'), '5')
    assertWholeLines(sinkFile)
  }
  const failed = await sc.waitForEvent('gateway.sink.failed')
  assert.equal((failed.err as { code: string }).code, 'ENOSPC')

  rmSync(filler)
  for (const name of ['Freed1', 'Freed2', 'Full1', 'Full2', 'Full3', 'Full4']) {
    assert.equal((await send(name)).status, 201, `${name} is stored once there is room (it was rolled back)`)
  }
  const recovered = await sc.waitForEvent('gateway.sink.recovered')
  assert.equal(recovered.failures, whileFull.length)
  assert.equal(sc.events('gateway.sink.failed').length, 1, 'one log line for the whole episode')

  const names = assertWholeLines(sinkFile).map((l) => l.alertname)
  assert.deepEqual(names.sort(), [...stored].sort(), 'every alert that got a 2xx, each once')
  assert.equal(await stop(sc), 0)
})

test('the sink file deleted, replaced, then its folder: the very next alerts go to the file at the path', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-sink-gone-'))
  const sinkFile = join(dir, 'sink', 'alerts.jsonl')
  const sc = await launch(t, { GATEWAY_SINK_FILE: sinkFile })
  const base = await sc.url('gateway')
  assert.equal((await post(base, webhook([alert('First')]))).status, 201)
  // No pause: the path is looked up once a second, but a file deleted under the sink is seen at
  // the next append (appended to, the alerts answered 2xx would go with it).
  rmSync(sinkFile)
  assert.equal((await post(base, webhook([alert('AfterDelete')]))).status, 201)
  await sc.waitForEvent('gateway.sink.reopened')
  assert.deepEqual(
    assertWholeLines(sinkFile).map((l) => l.alertname),
    ['AfterDelete'],
  )
  // Another file renamed over it (`mv new alerts.jsonl`): the old one is deleted as well.
  writeFileSync(join(dir, 'new.jsonl'), '')
  renameSync(join(dir, 'new.jsonl'), sinkFile)
  assert.equal((await post(base, webhook([alert('AfterReplace')]))).status, 201)
  assert.deepEqual(
    assertWholeLines(sinkFile).map((l) => l.alertname),
    ['AfterReplace'],
  )
  rmSync(join(dir, 'sink'), { recursive: true })
  assert.equal((await post(base, webhook([alert('AfterFolder')]))).status, 201)
  assert.deepEqual(
    assertWholeLines(sinkFile).map((l) => l.alertname),
    ['AfterFolder'],
  )
  assert.equal(sc.events('gateway.sink.reopened').length, 3)
  assert.equal(await stop(sc), 0)
})

test('a gateway restarted while its sink path is broken starts not ready and comes back when it is mended: no crash loop', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-sink-broken-'))
  const sinkDir = join(dir, 'sink')
  const sinkFile = join(sinkDir, 'alerts.jsonl')
  // A port of its own: the restarted worker serves on the same one.
  const gatewayAddr = `127.0.0.1:${await freePort()}`
  const sc = await launch(t, {
    GATEWAY_SINK_FILE: sinkFile,
    GATEWAY_ADDR: gatewayAddr,
    SIA_FAILPOINTS: 'gateway.before-sink=1*crash',
    HEALTH_CHECK_ADDR: '127.0.0.1:0',
  })
  const base = `http://${gatewayAddr}`
  // A file where the folder was: every open of the path fails (ENOTDIR).
  renameSync(sinkDir, join(dir, 'sink.old'))
  writeFileSync(sinkDir, '')
  await post(base, webhook([alert('Crashes')])).catch(() => {})
  await sc.waitForEvent('worker.crashed', { service: 'gateway' })
  const failed = await sc.waitForEvent('gateway.sink.failed', { path: sinkFile })
  assert.equal((failed.err as { code: string }).code, 'ENOTDIR')
  await sc.waitForEvent('gateway.not-ready', { degraded: 'sink' })
  const readyz = await fetch(`${await sc.url('healthcheck')}/readyz`)
  assert.equal(readyz.status, 503)
  rmSync(sinkDir)
  await sc.waitForEvent('gateway.ready-again', {}, 10_000)
  assert.equal((await post(base, webhook([alert('Mended')]))).status, 201)
  assert.deepEqual(
    assertWholeLines(sinkFile).map((l) => l.alertname),
    ['Mended'],
  )
  assert.deepEqual(sc.events('worker.crash-loop'), [])
  assert.equal(await stop(sc), 0)
})
