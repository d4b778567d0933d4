import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { createLogger } from '../shared/logger.js'
import { threadLock } from '../shared/thread-lock.js'
import type { SinkRecord } from '../workers/gateway/sink.js'
import { createFileSink } from '../workers/gateway/sink-file.js'
import { fillDisk, smallTmpfs } from './support/tmpfs.js'

/**
 * The file sink encodes a batch's lines into many buffers and appends them as they are
 * (shared/fs-async.ts `writevAll`): what lands in the file is every line, whole and in order,
 * however many buffers a group of batches makes, and a failed append is cut back whole.
 */
const record = (name: string, text = ''): SinkRecord => ({
  fingerprint: name,
  alertname: name,
  status: 'firing',
  severity: null,
  namespace: null,
  labels: { alertname: name },
  annotations: { text },
  startsAt: null,
  endsAt: null,
  generatorURL: null,
  receiver: null,
  receivedAt: '2026-12-02T00:00:00.000Z',
})
const lines = (path: string) =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as SinkRecord)
const log = createLogger('gateway', 'silent')

test('a group of batches past IOV_MAX buffers is appended whole and in order, multi-byte text intact', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-sink-'))
  const path = join(dir, 'alerts.jsonl')
  const sink = await createFileSink(path, log)
  t.after(() => sink.close())
  // One batch of ~2 MB (dozens of encoded buffers, each line with text of 1-4 byte characters),
  // and 1500 one-line batches queued behind it: one group of more than 1024 buffers.
  const big = Array.from({ length: 3000 }, (_, i) => record(`B${i}`, `é€😀 ${i} `.repeat(60)))
  const small = Array.from({ length: 1500 }, (_, i) => [record(`S${i}`, 'ü')])
  await Promise.all([sink.write(big), ...small.map((batch) => sink.write(batch))])
  // Batches are appended in the order they are ready (the big one is encoded in slices, the
  // small ones at once): the big batch's lines lie together and in order, and every small batch's
  // line is there once.
  const got = lines(path).map((r) => `${r.alertname} ${r.annotations.text}`)
  assert.equal(got.length, big.length + small.length)
  const first = got.indexOf(`B0 ${big[0]!.annotations.text}`)
  assert.ok(first >= 0, 'the big batch is in the file')
  const want = big.map((r) => `${r.alertname} ${r.annotations.text}`)
  assert.ok(
    got.slice(first, first + big.length).every((l, i) => l === want[i]),
    'the big batch whole, in order, its text intact',
  )
  const rest = [...got.slice(0, first), ...got.slice(first + big.length)]
  assert.deepEqual(
    rest.sort(),
    small.map((_, i) => `S${i} ü`).sort(),
    'every small batch, once, its text intact',
  )
})

test('a batch larger than the room left is cut back whole, and appended once there is room', async (t) => {
  let sink: Awaited<ReturnType<typeof createFileSink>> | undefined
  const mnt = smallTmpfs(t, 'sia-sink-full-', async () => sink?.close())
  if (!mnt) return
  const path = join(mnt, 'alerts.jsonl')
  sink = await createFileSink(path, log)
  await sink.write([record('First')])
  const before = statSync(path).size
  // Leave 64 KiB of room, then write ~140 KiB: the append starts and fails part way (ENOSPC).
  assert.equal(fillDisk(mnt), 'ENOSPC')
  const filler = join(mnt, 'filler')
  writeFileSync(filler, readFileSync(filler).subarray(64 * 1024))
  const batch = Array.from({ length: 200 }, (_, i) => record(`Big${i}`, 'x'.repeat(400)))
  await assert.rejects(sink.write(batch), { code: 'ENOSPC' })
  assert.equal(statSync(path).size, before, 'the failed append is cut back to the size before it')
  writeFileSync(filler, '')
  await sink.write(batch)
  assert.deepEqual(
    lines(path).map((r) => r.alertname),
    ['First', ...batch.map((r) => r.alertname)],
  )
})

test("a successor's sink leaves the file's end alone: it may be its predecessor's append, still being copied in", async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-sink-')), 'alerts.jsonl')
  const whole = `${JSON.stringify(record('Answered'))}\n`
  const inFlight = JSON.stringify(record('InFlight'))
  writeFileSync(path, whole + inFlight.slice(0, 20)) // the predecessor's writev, part way
  const successor = await createFileSink(path, log, undefined, { repair: false })
  assert.equal(readFileSync(path, 'utf8'), whole + inFlight.slice(0, 20), 'nothing cut')
  writeFileSync(path, `${inFlight.slice(20)}\n`, { flag: 'a' }) // the append completes
  await successor.close()
  assert.deepEqual(
    lines(path).map((r) => r.alertname),
    ['Answered', 'InFlight'],
  )
  // A sink that is no successor cuts a partial line back (a crash's, at the process's start).
  writeFileSync(path, 'torn', { flag: 'a' })
  const first = await createFileSink(path, log)
  await first.close()
  assert.deepEqual(
    lines(path).map((r) => r.alertname),
    ['Answered', 'InFlight'],
  )
})

/** A gateway draining and its successor serving, appending to one file under one lock. */
async function generations(t: TestContext) {
  const dir = mkdtempSync(join(tmpdir(), 'sia-sink-'))
  const path = join(dir, 'alerts.jsonl')
  const lock = threadLock(new Int32Array(new SharedArrayBuffer(4)), 0)
  const draining = await createFileSink(path, log, undefined, { lock })
  const serving = await createFileSink(path, log, undefined, { repair: false, lock })
  t.after(async () => {
    await draining.close()
    await serving.close()
  })
  return { dir, path, draining, serving }
}

test('another file renamed over the sink file is repaired before the next append, by a gateway and by its successor: no line glued to a torn one', async (t) => {
  const { dir, path, draining, serving } = await generations(t)
  const replace = (name: string) => {
    const other = join(dir, 'other')
    writeFileSync(other, `${JSON.stringify(record(`${name}Whole`))}\n{"alertname":"${name}Tor`)
    renameSync(other, path)
  }
  await draining.write([record('Before')])
  replace('Old')
  await draining.write([record('AfterDraining')])
  assert.deepEqual(
    lines(path).map((r) => r.alertname),
    ['OldWhole', 'AfterDraining'],
  )
  replace('Older')
  await serving.write([record('AfterServing')])
  assert.deepEqual(
    lines(path).map((r) => r.alertname),
    ['OlderWhole', 'AfterServing'],
  )
})

test("a failed append whose cut-back failed too is cut by the next append, either generation's: never past the other's lines", (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-sink-cut-')), 'alerts.jsonl')
  const url = (m: string) => JSON.stringify(new URL(m, import.meta.url).href)
  // In a process of its own: node:fs patched before the sink loads it. The next append lands in
  // part, then fails (EIO), and its cut-back fails once, as on a flaky device.
  const script = `
    const fs = process.getBuiltinModule('node:fs')
    const fault = { writes: 0, truncs: 0 }
    const eio = (call) => Object.assign(new Error('EIO: i/o error, ' + call), { code: 'EIO' })
    const { writev, ftruncate } = fs
    fs.writev = Object.assign((fd, bufs, ...rest) => {
      if (fault.writes === 0) return writev(fd, bufs, ...rest)
      fault.writes--
      fs.writeSync(fd, Buffer.concat(bufs).subarray(0, 25))
      process.nextTick(rest.at(-1), eio('write'))
    }, Object.fromEntries(Object.getOwnPropertySymbols(writev).map((k) => [k, writev[k]])))
    fs.ftruncate = (fd, len, done) => {
      if (fault.truncs === 0) return ftruncate(fd, len, done)
      fault.truncs--
      process.nextTick(done, eio('ftruncate'))
    }
    const { createLogger } = await import(${url('../shared/logger.js')})
    const { threadLock } = await import(${url('../shared/thread-lock.js')})
    const { createFileSink } = await import(${url('../workers/gateway/sink-file.js')})
    const log = createLogger('gateway', 'silent')
    const lock = threadLock(new Int32Array(new SharedArrayBuffer(4)), 0)
    const draining = await createFileSink(${JSON.stringify(path)}, log, undefined, { lock })
    const serving = await createFileSink(${JSON.stringify(path)}, log, undefined, { repair: false, lock })
    const rec = (alertname) => ({ ...${JSON.stringify(record('x'))}, fingerprint: alertname, alertname })
    const outcome = (w) => w.then(() => 'stored', (e) => e.code)
    const outcomes = []
    await draining.write([rec('DrainingOk')])
    await serving.write([rec('ServingOk')])
    Object.assign(fault, { writes: 1, truncs: 1 })
    outcomes.push(await outcome(draining.write([rec('DrainingFailed')])))
    outcomes.push(await outcome(serving.write([rec('ServingAcked')])))
    outcomes.push(await outcome(draining.write([rec('DrainingLater')])))
    await draining.close()
    await serving.close()
    console.log(JSON.stringify(outcomes))`
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 30_000,
  })
  t.diagnostic(r.stderr)
  assert.equal(r.status, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), ['EIO', 'stored', 'stored'])
  assert.deepEqual(
    lines(path).map((l) => l.alertname),
    ['DrainingOk', 'ServingOk', 'ServingAcked', 'DrainingLater'],
  )
})

test("a write that comes once the sink is closed is refused: its descriptor number may be another file's by then", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-sink-'))
  const path = join(dir, 'alerts.jsonl')
  const sink = await createFileSink(path, log)
  await sink.write([record('Before')])
  await sink.close()
  // The process opens another file, which may get the number the sink's descriptor had.
  const other = join(dir, 'key.pem')
  writeFileSync(other, 'KEY\n')
  const fd = openSync(other, 'a')
  try {
    await assert.rejects(sink.write([record('Late')]), { code: 'ERR_SINK_CLOSED' })
  } finally {
    closeSync(fd)
  }
  assert.equal(readFileSync(other, 'utf8'), 'KEY\n', 'nothing written to the file that took its number')
  assert.deepEqual(
    lines(path).map((r) => r.alertname),
    ['Before'],
  )
})

test('a sink file it creates has its name made durable: its directory is synced once it is open', (t) => {
  if (spawnSync('strace', ['-V']).status !== 0) return t.skip('strace is not installed')
  const dir = mkdtempSync(join(tmpdir(), 'sia-sink-dir-'))
  const path = join(dir, 'alerts.jsonl')
  const trace = join(mkdtempSync(join(tmpdir(), 'sia-strace-')), 'trace')
  const script = `
    import { createLogger } from ${JSON.stringify(new URL('../shared/logger.js', import.meta.url).href)}
    import { createFileSink } from ${JSON.stringify(new URL('../workers/gateway/sink-file.js', import.meta.url).href)}
    const sink = await createFileSink(${JSON.stringify(path)}, createLogger('gateway', 'silent'))
    await sink.close()`
  const r = spawnSync(
    'strace',
    ['-f', '-e', 'trace=openat,fsync', '-o', trace, process.execPath, '--input-type=module', '-e', script],
    { encoding: 'utf8', timeout: 30_000 },
  )
  assert.equal(r.status, 0, r.stderr)
  const calls = readFileSync(trace, 'utf8').split('\n')
  const created = calls.findIndex((l) => l.includes(`openat(AT_FDCWD, "${path}", `) && l.includes('O_CREAT'))
  assert.ok(created >= 0, 'the sink file was opened')
  const dirFd = calls
    .slice(created)
    .map((l) => new RegExp(`openat\\(AT_FDCWD, "${dir}", O_RDONLY[^)]*\\) = (\\d+)`).exec(l)?.[1])
    .find((fd) => fd !== undefined)
  assert.ok(dirFd, 'its directory was opened after it')
  assert.ok(
    calls.slice(created).some((l) => new RegExp(`fsync\\(${dirFd}\\) += 0`).test(l)),
    'and synced',
  )
})

test('a path that could not be opened at start is repaired when it first opens: the next line is not glued to a torn one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-sink-late-'))
  const real = join(dir, 'real')
  const path = join(dir, 'alerts.jsonl')
  symlinkSync(join(real, 'alerts.jsonl'), path) // into a folder not there yet (a volume not mounted)
  const sink = await createFileSink(path, log)
  t.after(() => sink.close())
  assert.equal(sink.usable?.(), false)
  mkdirSync(real)
  writeFileSync(join(real, 'alerts.jsonl'), `${JSON.stringify(record('Whole'))}\n{"alertname":"Tor`)
  await sink.probe?.()
  await sink.write([record('New')])
  assert.deepEqual(
    lines(path).map((r) => r.alertname),
    ['Whole', 'New'],
  )
})

test('a gateway and its successor appending to one file while one probes: the probe cuts back only its own filler (the lock between them)', async (t) => {
  const { path, draining, serving } = await generations(t)
  // A probe (the one sink found the disk full) while the other appends what it answers 2xx for:
  // without the lock nearly every record went with a probe's cut-back.
  const n = 200
  for (let i = 0; i < n; i++) await Promise.all([draining.probe!(), serving.write([record(`a${i}`)])])
  assert.deepEqual(
    lines(path).map((r) => r.alertname),
    Array.from({ length: n }, (_, i) => `a${i}`),
  )
})
