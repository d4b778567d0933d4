import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { createLogFileWriter } from '../shared/log-file.js'
import { eventually } from './support/eventually.js'
import { ORDER } from './support/lifecycle.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'
import { smallTmpfs } from './support/tmpfs.js'

const lines = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean)

/** Resident memory (MiB) and thread count of a running sidecar, from /proc. */
function vitals(sc: Sidecar): { rssMiB: number; threads: number } {
  const status = readFileSync(`/proc/${sc.proc.pid}/status`, 'utf8')
  return {
    rssMiB: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024,
    threads: readdirSync(`/proc/${sc.proc.pid}/task`).length,
  }
}

// Each its own sidecar and directory: two at a time.
describe('LOG_DIR through the CLI', { concurrency: 2 }, () => {
  it('writes every line of every thread to <dir>/sia-supervisor.<LEVEL>.log, as on stdout, to the exit record', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'sia-logdir-')), 'logs', 'nested') // created on demand
    const sc = await startReady({ env: { LOG_DIR: dir, LOG_LEVEL: 'info' } })
    let code: number | null
    try {
      await (
        await fetch(`${await sc.url('token')}/roletoken`, {
          method: 'POST',
          body: JSON.stringify({ domain: 'demo', role: 'reader' }),
        })
      ).text()
    } finally {
      code = await stop(sc)
    }
    assert.equal(code, 0)
    const file = join(dir, 'sia-supervisor.info.log')
    assert.equal(statSync(file).mode & 0o777, 0o644)
    const written = lines(file)
    const records = written.map((l) => JSON.parse(l) as { service: string; event?: string })
    // Every thread's lines, whole (one writer: no interleaving, no torn line).
    assert.deepEqual([...new Set(records.map((r) => r.service))].sort(), [...ORDER, 'supervisor'].sort())
    // stdout stays the primary: the file holds the same records.
    assert.deepEqual(
      written.map((l) => JSON.parse(l)).sort(byText),
      sc.records.map((r) => ({ ...r })).sort(byText),
    )
    assert.equal(records.at(-1)?.event, 'supervisor.exit', 'flushed at exit, the exit record last')
    assert.equal(sc.events('log.file.failed').length, 0)
  })

  it('a full disk (ENOSPC) drops file lines, says so once on stdout, and never blocks or kills a service', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-logdir-full-'))
    symlinkSync('/dev/full', join(dir, 'sia-supervisor.info.log')) // every write: ENOSPC
    const sc = await startReady({ env: { LOG_DIR: dir, MEMORY_REPORT_INTERVAL: '100ms' } })
    try {
      const failed = await sc.waitForEvent('log.file.failed')
      assert.equal(failed.level, 'warn')
      assert.equal((failed.err as { code: string }).code, 'ENOSPC')
      // Services go on logging and answering.
      const n = sc.events('memory.report').length
      await sc.waitForCount('memory.report', n + 5)
      assert.equal((await fetch(`${await sc.url('healthcheck')}/readyz`)).status, 200)
      assert.equal(sc.events('log.file.failed').length, 1, 'said once, not per line')
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  it('an unusable LOG_DIR (a file in the way) is the same: stdout only, a warning, exit 0', async () => {
    const blocker = join(mkdtempSync(join(tmpdir(), 'sia-logdir-')), 'not-a-dir')
    writeFileSync(blocker, '')
    const sc = await startReady({ env: { LOG_DIR: join(blocker, 'logs') } })
    try {
      const failed = await sc.waitForEvent('log.file.failed')
      assert.match(String((failed.err as { code: string }).code), /^(ENOTDIR|EEXIST)$/)
    } finally {
      assert.equal(await stop(sc), 0)
    }
  })

  it('costs no thread and little memory: one writer on the main thread, workers forward to it', async () => {
    const sample = async (env: Record<string, string>) => {
      const sc = await startReady({ env })
      try {
        // Settled: the same number of threads three reads in a row (a thread of Node's or V8's
        // own may come and go while the process settles; one read on a loaded machine caught one).
        await sleep(1500)
        let last = vitals(sc)
        for (let same = 0, i = 0; same < 2 && i < 24; i++) {
          await sleep(250)
          const now = vitals(sc)
          same = now.threads === last.threads ? same + 1 : 0
          last = now
        }
        return last
      } finally {
        await stop(sc)
      }
    }
    // Side by side: the same moment of the machine for both.
    const [without, withDir] = await Promise.all([
      sample({}),
      sample({ LOG_DIR: mkdtempSync(join(tmpdir(), 'sia-logdir-')) }),
    ])
    // Measured on the development machine: 18 threads either way, RSS +0.1 to +3 MiB (of ~205).
    assert.equal(withDir.threads, without.threads, `threads ${without.threads} -> ${withDir.threads}`)
    assert.ok(
      withDir.rssMiB - without.rssMiB < 16,
      `RSS ${without.rssMiB.toFixed(1)} -> ${withDir.rssMiB.toFixed(1)} MiB`,
    )
  })
})

/** A sidecar whose LOG_DIR file's writes never return (support/hung-write.ts), from `from` on if given. */
async function onHungVolume(t: TestContext, from?: NodeJS.Signals) {
  const dir = mkdtempSync(join(tmpdir(), 'sia-logdir-hung-'))
  const fifo = join(dir, 'fifo')
  spawnSync('mkfifo', [fifo])
  const file = join(dir, 'sia-supervisor.info.log')
  const sc = await startReady({
    env: {
      LOG_DIR: dir,
      SHUTDOWN_TIMEOUT: '3s',
      NODE_OPTIONS: `--import=${new URL('./support/hung-write.js', import.meta.url).pathname}`,
      HUNG_WRITE: file,
      HUNG_WRITE_FIFO: fifo,
      ...(from ? { HUNG_WRITE_FROM: from } : {}),
    },
  })
  t.after(() => sc.kill('SIGKILL'))
  return { sc, file }
}

/** SIGTERM; the exit, within SHUTDOWN_TIMEOUT (3 s) + 1 s and a second for a loaded machine. */
async function stopWithinBudget(sc: Sidecar) {
  const t0 = performance.now()
  sc.kill('SIGTERM')
  const exit = await Promise.race([sc.exited, sleep(20_000, undefined, { ref: false })])
  const ms = Math.round(performance.now() - t0)
  assert.ok(exit, `still running ${ms} ms after SIGTERM`)
  assert.equal(exit.code, 0)
  assert.ok(ms < 5000, `out ${ms} ms after SIGTERM`)
  assert.deepEqual(
    sc.events('supervisor.exit').map(({ code, cause }) => ({ code, cause })),
    [{ code: 0, cause: 'signal' }],
  )
  assert.equal(sc.records.at(-1)?.event, 'supervisor.exit')
}

test('LOG_DIR on a volume that hangs: SIGTERM still ends the process within its budget, code 0, supervisor.exit on stdout', async (t) => {
  // The file's writes never return: one of libuv's pool threads waits for good, which
  // process.exit() would join.
  const { sc, file } = await onHungVolume(t)
  // Its first write has waited long before the exit.
  await sleep(1500)
  await stopWithinBudget(sc)
  assert.equal(readFileSync(file, 'utf8'), '', 'its writes hung to the end')
})

test('LOG_DIR on a volume that hangs from the SIGTERM on: the write of the exit lines hangs; the exit gives it its half second, says so, and ends within its budget, code 0', async (t) => {
  const { sc, file } = await onHungVolume(t, 'SIGTERM')
  // Written while the volume answered.
  await eventually(
    async () => (existsSync(file) && readFileSync(file, 'utf8').includes('"supervisor.ready"')) || undefined,
  )
  await stopWithinBudget(sc)
  // Said on stdout, just before the exit record: the file does not have the last lines.
  const [failed, ...rest] = sc.records.slice(-2)
  assert.deepEqual(
    rest.map((r) => r.event),
    ['supervisor.exit'],
  )
  assert.equal(failed?.event, 'log.file.failed')
  assert.equal((failed?.err as { code?: string } | undefined)?.code, 'ETIMEDOUT')
  const written = lines(file).map((l) => JSON.parse(l) as { event?: string })
  assert.ok(!written.some((r) => r.event === 'supervisor.cancelled'), 'what came from the SIGTERM on hung')
})

const byText = (a: object, b: object) => JSON.stringify(a).localeCompare(JSON.stringify(b))

test('rotation: by size, the newest in .1, at most the configured number of old files, lines whole', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-rotate-'))
  const w = createLogFileWriter(dir, 'debug', { maxBytes: 10_000, backups: 5 })
  const line = (i: number) => `${JSON.stringify({ i, pad: 'x'.repeat(480) })}\n`
  for (let i = 0; i < 400; i++) {
    w.write(line(i))
    if (i % 50 === 0) await sleep(5) // several batches, several rotations
  }
  // Polled while the writer rotates: between its rename and its reopen, the file is not there.
  const last = () => {
    try {
      return lines(w.path).at(-1)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }
  for (let t = 0; t < 200 && last() !== line(399).trim(); t++) await sleep(10)
  await w.close()
  const files = readdirSync(dir).sort()
  assert.deepEqual(files, [
    'sia-supervisor.debug.log',
    'sia-supervisor.debug.log.1',
    'sia-supervisor.debug.log.2',
    'sia-supervisor.debug.log.3',
    'sia-supervisor.debug.log.4',
    'sia-supervisor.debug.log.5',
  ])
  const order = ['.5', '.4', '.3', '.2', '.1', ''].flatMap((s) =>
    lines(`${w.path}${s}`).map((l) => (JSON.parse(l) as { i: number }).i),
  )
  for (const s of ['.5', '.4', '.3', '.2', '.1', '']) assert.ok(statSync(`${w.path}${s}`).size <= 10_000)
  // The newest lines, in order, with no gap: older ones went with the oldest file.
  assert.equal(order.at(-1), 399)
  assert.deepEqual(
    order,
    order.map((_, k) => order[0]! + k),
  )
})

test('SIA default: 1 MB per file, 5 old files', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-rotate-'))
  const w = createLogFileWriter(dir, 'info')
  const big = `${JSON.stringify({ pad: 'y'.repeat(100_000) })}\n`
  for (let i = 0; i < 75; i++) {
    w.write(big)
    await sleep(1)
  }
  for (let t = 0; t < 300 && readdirSync(dir).length < 6; t++) await sleep(10)
  await sleep(100)
  await w.close()
  assert.deepEqual(readdirSync(dir).sort().at(-1), 'sia-supervisor.info.log.5')
  assert.equal(readdirSync(dir).length, 6)
  for (const f of readdirSync(dir)) assert.ok(statSync(join(dir, f)).size <= 1024 * 1024, f)
})

test('a full disk, then room again: the lines after it start on a line of their own, every line whole', async (t) => {
  const mnt = smallTmpfs(t, 'sia-logfs-', async () => {})
  if (!mnt) return
  const w = createLogFileWriter(mnt, 'info', { retryMs: 50 })
  t.after(() => w.close())
  const line = (i: number) => `${JSON.stringify({ i, pad: 'x'.repeat(3000) })}\n`
  const filler = join(mnt, 'filler')
  writeFileSync(filler, Buffer.alloc(200 * 1024)) // 56 KiB left of 256
  // More than fits: a write fails part way through a line.
  for (let i = 0; i < 40; i++) {
    w.write(line(i))
    await sleep(2)
  }
  await sleep(100)
  rmSync(filler)
  await sleep(100) // past retryMs
  w.write(line(1000))
  for (let k = 0; k < 100 && !readFileSync(w.path, 'utf8').includes('"i":1000'); k++) await sleep(10)
  const all = lines(w.path)
  assert.ok(all.length > 1)
  for (const l of all) assert.doesNotThrow(() => JSON.parse(l), l.slice(0, 40))
  assert.equal((JSON.parse(all.at(-1)!) as { i: number }).i, 1000)
})

/** The file's text once `text` is in it (the writer is asynchronous); '' if it never comes. */
async function once(path: string, text: string): Promise<string> {
  for (let k = 0; k < 200; k++) {
    try {
      const got = readFileSync(path, 'utf8')
      if (got.includes(text)) return got
    } catch {}
    await sleep(5)
  }
  return ''
}

describe('what others do to the log file', () => {
  const rec = (msg: string) => `${JSON.stringify({ msg })}\n`

  test('moved away (logrotate) or deleted with its folder: a new file at the path gets the next lines', async (t) => {
    const dir = join(mkdtempSync(join(tmpdir(), 'sia-follow-')), 'logs')
    const w = createLogFileWriter(dir, 'info', { checkMs: 0 })
    t.after(() => w.close())
    w.write(rec('a'))
    assert.equal(await once(w.path, '"a"'), rec('a'))
    renameSync(w.path, `${w.path}.moved`)
    w.write(rec('b'))
    assert.equal(await once(w.path, '"b"'), rec('b'))
    assert.equal(readFileSync(`${w.path}.moved`, 'utf8'), rec('a'))
    rmSync(dir, { recursive: true })
    w.write(rec('c'))
    assert.equal(await once(w.path, '"c"'), rec('c'))
  })

  test('truncated (copytruncate): the next lines start at its new end, no hole of NUL bytes, however soon after the last check', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-follow-'))
    // The path's own check once an hour: a truncation is seen without it.
    const w = createLogFileWriter(dir, 'info', { checkMs: 3_600_000 })
    t.after(() => w.close())
    w.write(rec('a'.repeat(500)))
    await once(w.path, 'aaa')
    truncateSync(w.path, 0)
    w.write(rec('b'))
    assert.equal(await once(w.path, '"b"'), rec('b'))
  })

  test('a last line left unfinished by a killed process is ended before the first new one', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-follow-'))
    const path = join(dir, 'sia-supervisor.info.log')
    writeFileSync(path, `${rec('whole')}{"msg":"cut sh`)
    const w = createLogFileWriter(dir, 'info')
    t.after(() => w.close())
    w.write(rec('next'))
    assert.equal(await once(path, '"next"'), `${rec('whole')}{"msg":"cut sh\n${rec('next')}`)
  })
})

test('at exit, a first open or a rotation under way is given its time (settle), then the last lines are written synchronously, after the others', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-exit-flush-'))
  // A last line cut by a killed run, and the exit coming before the first (asynchronous) open.
  mkdirSync(join(dir, 'a'))
  writeFileSync(join(dir, 'a', 'sia-supervisor.info.log'), '{"msg":"whole"}\n{"msg":"cut')
  const first = createLogFileWriter(join(dir, 'a'), 'info', { maxBytes: 1000 })
  t.after(() => first.close())
  first.write('{"msg":"early"}\n')
  assert.equal(await first.settle(5000), true)
  first.write('{"event":"supervisor.exit"}\n')
  first.flushSync()
  assert.equal(
    readFileSync(first.path, 'utf8'),
    '{"msg":"whole"}\n{"msg":"cut\n{"msg":"early"}\n{"event":"supervisor.exit"}\n',
  )

  const w = createLogFileWriter(join(dir, 'b'), 'info', { maxBytes: 1000 })
  t.after(() => w.close())
  const line = (i: number) => `${JSON.stringify({ i, pad: 'x'.repeat(200) })}\n`
  for (let i = 0; i < 4; i++) w.write(line(i))
  await once(w.path, '"i":3')
  // This one goes past maxBytes: the file is closed for its rotation as the process exits.
  w.write(line(4))
  assert.equal(await w.settle(5000), true)
  w.write('{"event":"supervisor.exit"}\n')
  w.flushSync()
  const text = readFileSync(w.path, 'utf8')
  assert.equal(text, `${line(4)}{"event":"supervisor.exit"}\n`)
})

test('lines queued when the queue overflowed (a slow disk, not a failing one) still reach the file at exit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-exit-overflow-'))
  const w = createLogFileWriter(dir, 'info', { maxQueueBytes: 100 })
  t.after(() => w.close())
  w.write('{"msg":"queued"}\n')
  w.write(`${JSON.stringify({ msg: 'x'.repeat(200) })}\n`) // over the bound: dropped, said
  assert.equal(await w.settle(5000), true)
  w.write('{"event":"supervisor.exit"}\n')
  w.flushSync()
  assert.equal(readFileSync(w.path, 'utf8'), '{"msg":"queued"}\n{"event":"supervisor.exit"}\n')
})

/** Runs `body` in a Node of its own, after `prelude`, with a writer `w` on `dir`; its stdout. */
function exitScript(dir: string, prelude: string, body: string): string {
  const script = `
    import fs from 'node:fs'
    ${prelude}
    const { createLogFileWriter } = await import(${JSON.stringify(new URL('../shared/log-file.js', import.meta.url).href)})
    const w = createLogFileWriter(${JSON.stringify(dir)}, 'info')
    ${body}`
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 20_000,
  })
  assert.equal(r.status, 0, r.stderr)
  return r.stdout
}

test('a write still under way at exit (a disk that hangs): settle gives it its time and says so on stdout; the exit flush writes nothing behind it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-exit-inflight-'))
  // The asynchronous write never completes, as one of a volume that hangs; a synchronous one
  // behind it would hang the exit too.
  const stdout = exitScript(
    dir,
    `const { writeSync } = fs
     fs.write = () => {}
     fs.writeSync = (fd, ...rest) => {
       if (fd !== 1) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
       return Reflect.apply(writeSync, fs, [fd, ...rest])
     }`,
    `w.write('{"msg":"in flight"}\\n')
     const settled = await w.settle(100)
     w.write('{"event":"supervisor.exit"}\\n')
     w.flushSync()
     console.log(JSON.stringify({ settled }))
     process.exit(0)`,
  )
  const said = stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  assert.deepEqual(
    said.map((r) => r.event ?? r.settled),
    ['log.file.failed', false],
  )
  assert.equal((said[0]?.err as { code?: string } | undefined)?.code, 'ETIMEDOUT')
  assert.equal(readFileSync(join(dir, 'sia-supervisor.info.log'), 'utf8'), '')
})

test("at exit, a first open still under way is given its time: the last lines go at the file's end, not over the previous run", () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-exit-open-'))
  const path = join(dir, 'sia-supervisor.info.log')
  writeFileSync(path, '{"msg":"previous run 1"}\n{"msg":"previous run 2"}\n')
  // fstat made slow: the exit comes while the writer's first open waits for it.
  exitScript(
    dir,
    `const fstat = fs.fstat
     fs.fstat = (fd, cb) => setTimeout(() => fstat(fd, cb), 100)`,
    `w.write('{"msg":"early"}\\n')
     setTimeout(async () => {
       await w.settle(2000)
       w.write('{"event":"supervisor.exit"}\\n')
       w.flushSync()
       process.exit(0)
     }, 30)`,
  )
  assert.equal(
    readFileSync(path, 'utf8'),
    '{"msg":"previous run 1"}\n{"msg":"previous run 2"}\n{"msg":"early"}\n{"event":"supervisor.exit"}\n',
  )
})
