import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import {
  closeSync,
  constants,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  writeSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Worker } from 'node:worker_threads'
import { createStdoutSink, newStdoutState, releaseStdoutOf } from '../shared/stdout-sink.js'
import { eventually } from './support/eventually.js'
import { startSidecar } from './support/sidecar.js'

/**
 * stdout that cannot take the log lines: a reader that stops reading (a log collector stalled,
 * a full pipe), a full disk, a reader gone. Lines are lost, counted and said; no thread waits
 * past the first; no record is cut or interleaved with another thread's.
 */

/** A FIFO whose reader is open but reads only when told: both ends non-blocking. */
function fifo() {
  const dir = mkdtempSync(join(tmpdir(), 'sia-stdout-'))
  const path = join(dir, 'out')
  execFileSync('mkfifo', [path])
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  const writer = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK)
  const chunk = Buffer.alloc(64 * 1024)
  return {
    dir,
    writer,
    /** Fills the pipe until it takes nothing more, with lines of dots. */
    fill() {
      const filler = Buffer.from(`${'.'.repeat(4095)}\n`)
      for (;;) {
        try {
          writeSync(writer, filler)
        } catch {
          return
        }
      }
    },
    /** Everything the pipe holds now, or its first `max` bytes. */
    drain(max = Number.POSITIVE_INFINITY): string {
      let out = ''
      for (let left = max; left > 0; ) {
        try {
          const n = readSync(reader, chunk, 0, Math.min(chunk.length, left), null)
          left -= n
          if (n === 0) return out
          out += chunk.subarray(0, n).toString()
        } catch {
          return out
        }
      }
      return out
    },
    close() {
      for (const fd of [reader, writer]) {
        try {
          closeSync(fd)
        } catch {}
      }
    },
  }
}

const line = (n: number, pad = 200) => `${JSON.stringify({ n, pad: 'x'.repeat(pad) })}\n`
/** A sink with a state of its own, as a process's threads share one. */
const sinkOn = (fd: number, service: string, state = newStdoutState()) =>
  createStdoutSink({ fd, stallMs: 20, service, state })
const records = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)

describe('stdout sink', () => {
  test('a reader that stops: a line waits for it once, then lines are dropped without waiting; once it reads again they go on, the drop said with its count just before the first', () => {
    const pipe = fifo()
    try {
      const write = sinkOn(pipe.writer, 'gateway')
      pipe.fill()
      // Without a bound each of these would wait for a reader that never comes.
      for (let i = 0; i < 100; i++) write(line(i))
      const before = pipe.drain()
      assert.equal(before.replace(/[.\n]/g, ''), '', 'nothing of the dropped lines reached the pipe')
      write(line(100))
      const after = records(pipe.drain())
      assert.deepEqual(
        after.map((r) => r.n ?? r.event),
        ['log.stdout.dropped', 100],
      )
      assert.equal(after[0]?.dropped, 100)
      assert.equal(after[0]?.code, 'EAGAIN')
      assert.equal(after[0]?.service, 'gateway')
      // Said once: the next line is just a line.
      write(line(101))
      assert.deepEqual(
        records(pipe.drain()).map((r) => r.n),
        [101],
      )
    } finally {
      pipe.close()
    }
  })

  test('a line longer than the pipe holds, written in part when the reader stops, is finished before any other line: none is cut or interleaved', () => {
    const pipe = fifo()
    try {
      const write = sinkOn(pipe.writer, 'token')
      const long = line(1, 200_000)
      write(long) // part of it fits; the rest waits for the reader
      write(line(2)) // dropped: the long line's rest comes first
      // The reader reads again, a pipeful at a time, lines still coming.
      let out = ''
      for (let i = 3; i < 12; i++) {
        out += pipe.drain()
        write(line(i))
      }
      out += pipe.drain()
      const got = records(out)
      assert.equal(got[0]?.n, 1)
      assert.equal(String(got[0]?.pad).length, 200_000)
      assert.ok(!got.some((r) => r.n === 2), 'the line behind the rest was dropped, not spliced in')
      assert.equal(got.at(-1)?.n, 11)
      assert.ok(
        got.some((r) => r.event === 'log.stdout.dropped'),
        'the drop is said',
      )
      // Every line whole: each parsed as JSON above; nothing else on the stream.
      assert.equal(out.split('\n').filter((l) => l && !l.startsWith('{')).length, 0)
    } finally {
      pipe.close()
    }
  })

  test('lines dropped, then a line that gets through only in part: the drop is said just before it, and the next line finishes it', () => {
    const pipe = fifo()
    try {
      const write = sinkOn(pipe.writer, 'gateway')
      pipe.fill()
      for (let i = 0; i < 5; i++) write(line(i))
      pipe.drain()
      write(line(5, 100_000)) // more than the pipe holds: its rest waits
      let out = pipe.drain()
      write(line(6))
      out += pipe.drain()
      write(line(7))
      out += pipe.drain()
      const got = records(out)
      // Line 6 finishes the rest of 5 and goes whole.
      assert.deepEqual(
        got.map((r) => r.n ?? r.event),
        ['log.stdout.dropped', 5, 6, 7],
      )
      assert.equal(got[0]?.dropped, 5)
    } finally {
      pipe.close()
    }
  })

  test('a full disk or a reader gone: the line is dropped, nothing is thrown', () => {
    const full = openSync('/dev/full', 'w')
    try {
      const write = sinkOn(full, 'metrics')
      for (let i = 0; i < 10; i++) write(line(i))
    } finally {
      closeSync(full)
    }
    const pipe = fifo()
    const write = sinkOn(pipe.writer, 'metrics')
    pipe.close() // the reader too: EPIPE (SIGPIPE is ignored by Node)
    write(line(1))
    write(line(2))
  })
})

/**
 * A thread that writes `line` through a sink on `state`, says so, then stays up and idle (it logs
 * nothing more): as a service's thread whose request was its last log line for a while.
 */
function writerThread(fd: number, state: SharedArrayBuffer, line: string, stallMs: number): Worker {
  const url = JSON.stringify(new URL('../shared/stdout-sink.js', import.meta.url).href)
  const code = `
    const { workerData, parentPort } = require('node:worker_threads')
    import(${url}).then(({ createStdoutSink }) => {
      const { fd, state, line, stallMs } = workerData
      createStdoutSink({ fd, stallMs, service: 'token', state })(line)
      parentPort.postMessage('written')
      setInterval(() => {}, 60_000)
    })`
  return new Worker(code, { eval: true, workerData: { fd, state, line, stallMs } })
}

const written = (w: Worker) => new Promise((resolve) => w.once('message', resolve))

/**
 * `out`'s records, once every line is whole, the long line 1 (200,000 bytes of pad) is the first,
 * finished before any other, and line 5 came after it.
 */
function longLineFirst(out: string) {
  assert.deepEqual(
    out.split('\n').filter((l) => l && !l.startsWith('{')),
    [],
    'every line whole',
  )
  const got = records(out)
  assert.equal(got[0]?.n, 1, 'the token line, finished before any other')
  assert.equal(String(got[0]?.pad).length, 200_000)
  assert.ok(got.some((r) => r.n === 5))
  return got
}

/** Reads the pipe a pipeful at a time, a line of this thread's written after each, until `done`. */
function readWhileWriting(
  pipe: ReturnType<typeof fifo>,
  write: (line: string) => void,
  done: (out: string) => boolean,
) {
  let out = ''
  for (let i = 2; i < 40 && !done(out); i++) {
    out += pipe.drain()
    write(line(i))
  }
  return out + pipe.drain()
}

describe('stdout shared by threads', () => {
  test('a line a thread left in part (the reader stopped) is finished first by the next line of another thread: that thread, idle, need not log again', async (t) => {
    const pipe = fifo()
    t.after(() => pipe.close())
    const state = newStdoutState()
    const long = line(1, 200_000) // more than the pipe holds: part goes in, the rest waits
    const token = writerThread(pipe.writer, state, long, 20)
    t.after(() => token.terminate())
    await written(token)
    const write = sinkOn(pipe.writer, 'supervisor', state)
    const got = longLineFirst(readWhileWriting(pipe, write, (o) => o.includes('"n":5')))
    assert.equal(got.filter((r) => r.n === 1).length, 1)
  })

  test('a thread that ends holding stdout mid-line (terminated while it waits for the reader): freed as it ends, its line is finished by the next line of another thread, never glued to it', async (t) => {
    const pipe = fifo()
    t.after(() => pipe.close())
    const state = newStdoutState()
    // It waits for the reader as long as it can: it is terminated in that wait.
    const token = writerThread(pipe.writer, state, line(1, 200_000), 60_000)
    await sleep(300)
    const tid = token.threadId
    await token.terminate()
    releaseStdoutOf(tid, state) // what the supervisor does when a worker ends (worker-handle.ts)
    const write = sinkOn(pipe.writer, 'supervisor', state)
    longLineFirst(readWhileWriting(pipe, write, (o) => o.includes('"n":5')))
  })

  test('while the first thread to meet a stalled reader waits for it, another thread drops its line at once, and the drop is said before the next line', async (t) => {
    const pipe = fifo()
    t.after(() => pipe.close())
    const state = newStdoutState()
    pipe.fill()
    const token = writerThread(pipe.writer, state, line(1), 60_000)
    t.after(() => token.terminate())
    // It waits for the reader, holding stdout; full for 250 ms, the reader is taken as stalled.
    await sleep(600)
    const write = createStdoutSink({ fd: pipe.writer, stallMs: 5000, service: 'supervisor', state })
    const t0 = performance.now()
    write(line(2))
    const ms = performance.now() - t0
    assert.ok(ms < 1000, `the second thread waited ${Math.round(ms)} ms`)
    // The reader reads again: the first thread's line goes out, then the next is told of the drop.
    let out = pipe.drain()
    await written(token)
    out += pipe.drain()
    write(line(3))
    out += pipe.drain()
    const got = records(out)
    assert.deepEqual(
      got.map((r) => r.n ?? r.event),
      [1, 'log.stdout.dropped', 3],
    )
    assert.equal(got[1]?.dropped, 1)
  })
})

test('four threads logging bursts into a pipe its reader keeps reading lose no line: a pipe full for a moment is not a stalled reader', async (t) => {
  const pipe = fifo()
  t.after(() => pipe.close())
  const reader = collector(pipe)
  t.after(() => reader.stop())
  const state = newStdoutState()
  const url = JSON.stringify(new URL('../shared/stdout-sink.js', import.meta.url).href)
  // Each burst is several pipefuls (1,000 lines of ~260 bytes); the reader reads every 5 ms.
  const code = `
    const { workerData, parentPort } = require('node:worker_threads')
    import(${url}).then(async ({ createStdoutSink }) => {
      const write = createStdoutSink({ fd: workerData.fd, service: 'token', state: workerData.state })
      for (let burst = 0; burst < 5; burst++) {
        for (let i = 0; i < 1000; i++)
          write(JSON.stringify({ n: workerData.id * 10000 + burst * 1000 + i, pad: 'x'.repeat(220) }) + '\\n')
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      parentPort.postMessage('written')
    })`
  const threads = [0, 1, 2, 3].map(
    (id) => new Worker(code, { eval: true, workerData: { fd: pipe.writer, state, id } }),
  )
  t.after(() => Promise.all(threads.map((w) => w.terminate())))
  await Promise.all(threads.map(written))
  const got = records(reader.stop())
  assert.deepEqual(
    got.filter((r) => r.event === 'log.stdout.dropped'),
    [],
  )
  assert.equal(new Set(got.map((r) => r.n)).size, 20_000)
})

/** The pipe read every few milliseconds, as a log collector reads it, unless paused. */
function collector(pipe: ReturnType<typeof fifo>) {
  let out = ''
  let paused = false
  const timer = setInterval(() => {
    if (!paused) out += pipe.drain()
  }, 5)
  return {
    text: () => out,
    pause() {
      paused = true
    },
    resume() {
      paused = false
    },
    /** Reads `bytes` once, paused or not. */
    readOnce(bytes: number) {
      out += pipe.drain(bytes)
    },
    /** Stops reading; all it read. */
    stop(): string {
      clearInterval(timer)
      out += pipe.drain()
      return out
    },
  }
}

/** The lines that are neither a record nor a filler's dots. */
const junk = (text: string) => text.split('\n').filter((l) => l && !l.startsWith('{') && !/^\.+$/.test(l))

describe('the sidecar on a stdout that cannot take its lines', () => {
  /** Once a record of its LOG_DIR file (stdout is not read) matches `pred`. */
  async function seenIn(dir: string, pred: (r: Record<string, unknown>) => boolean, exited: () => boolean) {
    const file = join(dir, 'sia-supervisor.info.log')
    while (!(existsSync(file) && records(readFileSync(file, 'utf8')).some(pred))) {
      assert.ok(!exited(), 'the sidecar exited before it logged what was waited for')
      await sleep(20)
    }
  }
  const readyIn = (dir: string, exited: () => boolean) =>
    seenIn(dir, (r) => r.event === 'supervisor.ready', exited)
  const exitRecord = (dir: string) =>
    records(readFileSync(join(dir, 'sia-supervisor.info.log'), 'utf8')).find(
      (r) => r.event === 'supervisor.exit',
    )

  test('a log reader that reads nothing (a full pipe from the start): it boots, serves, and SIGTERM ends it with 0', {
    timeout: 60_000,
  }, async () => {
    const pipe = fifo()
    pipe.fill()
    const sc = startSidecar({ stdout: pipe.writer, env: { LOG_DIR: pipe.dir } })
    let gone = false
    void sc.exited.then(() => {
      gone = true
    })
    try {
      await readyIn(pipe.dir, () => gone)
      sc.kill('SIGTERM')
      assert.deepEqual(await sc.exited, { code: 0, signal: null })
      assert.equal(exitRecord(pipe.dir)?.code, 0)
    } finally {
      sc.kill('SIGKILL')
      pipe.close()
    }
  })

  test('stdout on a full disk (/dev/full): it boots, serves, and SIGTERM ends it with 0', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sia-stdout-'))
    const full = openSync('/dev/full', 'w')
    const sc = startSidecar({ stdout: full, env: { LOG_DIR: dir } })
    let gone = false
    void sc.exited.then(() => {
      gone = true
    })
    try {
      await readyIn(dir, () => gone)
      sc.kill('SIGTERM')
      assert.deepEqual(await sc.exited, { code: 0, signal: null })
      assert.equal(exitRecord(dir)?.code, 0)
    } finally {
      sc.kill('SIGKILL')
      closeSync(full)
    }
  })
  test("a client's long URL, quoted twice by its record, on a reader that stops then reads 8 KiB: every line on stdout is a whole record, each once, the URL cut to 1 KiB", {
    timeout: 60_000,
  }, async (t) => {
    const pipe = fifo()
    const reader = collector(pipe)
    const sc = startSidecar({ stdout: pipe.writer })
    t.after(() => {
      sc.kill('SIGKILL')
      reader.stop()
      pipe.close()
    })
    const seen = (pred: (r: Record<string, unknown>) => boolean) =>
      eventually(async () => records(reader.text()).find(pred), 30_000)
    const { port } = await seen((r) => r.event === 'server.listening' && r.service === 'token')
    await seen((r) => r.event === 'supervisor.ready')
    reader.pause()
    await sleep(50)
    pipe.fill()
    const url = `/${'x'.repeat(12_000)}`
    const answered = fetch(`http://127.0.0.1:${port}${url}`).then((res) => res.status)
    await sleep(100)
    reader.readOnce(8192) // room for part of a long line
    await sleep(500) // the token thread has given up waiting
    reader.resume()
    assert.equal(await answered, 400)
    // Records of the main thread, while the token thread logs nothing more.
    for (let i = 0; i < 3; i++) {
      sc.kill('SIGUSR2')
      await sleep(200)
    }
    sc.kill('SIGTERM')
    assert.equal((await sc.exited).code, 0)
    const out = reader.stop()
    assert.deepEqual(
      junk(out).map((l) => `${l.length} characters: ${l.slice(0, 60)} … ${l.slice(-60)}`),
      [],
      'every line a whole record',
    )
    const got = records(out)
    const requests = got.filter((r) => r.event === 'token.request')
    assert.equal(requests.length, 1, 'the record of the request, once')
    const path = String(requests[0]?.path)
    assert.ok(path.startsWith(url.slice(0, 1024)) && path.length < 1100, `path of ${path.length} characters`)
    assert.match(path, /12001 characters, cut/)
    assert.ok(String(requests[0]?.msg).length < 1200)
    assert.equal(got.filter((r) => r.event === 'supervisor.signal.ignored').length, 3)
  })

  test('a reader paused across SIGTERM (SHUTDOWN_TIMEOUT=1s): one thread waits for it, once, the others drop their lines, the run exits 0; once the reader is back, the last records are the count dropped and supervisor.exit', {
    timeout: 60_000,
  }, async (t) => {
    const pipe = fifo()
    const reader = collector(pipe)
    const sc = startSidecar({ stdout: pipe.writer, env: { LOG_DIR: pipe.dir, SHUTDOWN_TIMEOUT: '1s' } })
    t.after(() => {
      sc.kill('SIGKILL')
      reader.stop()
      pipe.close()
    })
    let gone = false
    void sc.exited.then(() => {
      gone = true
    })
    await readyIn(pipe.dir, () => gone)
    reader.pause()
    await sleep(50)
    pipe.fill()
    sc.kill('SIGTERM')
    // The last service stopped, as the LOG_DIR file says: all that is left to log is the exit's.
    await seenIn(
      pipe.dir,
      (r) => r.event === 'service.shutdown.done' && r.service === 'certificate',
      () => gone,
    )
    reader.resume()
    assert.deepEqual(await sc.exited, { code: 0, signal: null })
    const got = records(reader.stop())
    const [dropped, exit] = got.slice(-2)
    assert.equal(dropped?.event, 'log.stdout.dropped')
    assert.ok(Number(dropped?.dropped) > 0)
    assert.equal(dropped?.code, 'EAGAIN')
    assert.equal(exit?.event, 'supervisor.exit')
    assert.equal(exit?.code, 0)
    assert.equal(exitRecord(pipe.dir)?.code, 0)
  })
})
