import { writeSync } from './builtins.js'
import { monotonicMs } from './clock.js'
import { releaseHeldBy, threadLock } from './thread-lock.js'

/**
 * Every thread's JSON lines to stdout, one design for all of them: a line is written under a
 * lock the process's threads share (thread-lock.ts), so a record is never interleaved with
 * another thread's, whatever its length (a pipe write over 4 KiB is not atomic, and a non-blocking
 * one may take part of it). The line is first put in a buffer the threads share, and what stdout
 * has not taken of it stays there for whoever writes next, from any thread: a line begun when the
 * reader stopped is finished before any other line, by the next thread to write (not only by its
 * own, which may not log again, or may have ended: a thread that ends holding the lock is freed
 * by the supervisor, `releaseStdoutOf`). A line is written as it comes, a write(2) a line, so one
 * logged just before a `terminate()` or an exit is out.
 *
 * What stdout cannot take costs lines, never a thread. A reader that stops reading (a full pipe,
 * which Node makes non-blocking: EAGAIN) is waited for `stallMs` by the first thread to meet it,
 * once; from then on stdout is stalled for every thread: the others drop their lines at once (a
 * shutdown's seven threads each waiting in turn took it 2 s), and each line is tried once, without
 * waiting, until one goes out whole. A full disk or an I/O error drops the line; a reader gone
 * (EPIPE) ends stdout for the process. The lines dropped, by any thread, are counted, and the
 * count is said (`log.stdout.dropped`) just before the next line that goes out. The process's
 * last lines (`supervisor.exit`) wait for a stalled reader until an instant of their own
 * (`waitForStdoutUntil`). A line of more than MAX_LINE bytes is replaced by a record saying so.
 * pino's destination retried EAGAIN for ever (a paused log reader froze the supervisor: no signal
 * handled, no budget kept) and threw any other error (a full disk ended the process).
 */
export interface StdoutSinkOptions {
  fd?: number
  /** How long the first line to meet a reader that stopped waits for it; then lines no longer wait. */
  stallMs?: number
  /** The `service` of the records the sink writes itself (a drop, a line cut). */
  service: string
  /** What the process's threads share (`stdoutState()`); a test gives a sink one of its own. */
  state?: SharedArrayBuffer
}

/** The longest line written: a longer one would not fit the buffer its unwritten part stays in. */
const MAX_LINE = 1024 * 1024
/** Room in that buffer for the record of a drop, said before a line. */
const SAID_BYTES = 1024

// Int32 cells, then the bytes of the line being written.
const I_LOCK = 0
/** 1 once a line met a stdout that took nothing: lines are tried once each, not waited for. */
const I_STALLED = 1
/** 1 once the reader is gone (EPIPE). */
const I_GONE = 2
/** Lines dropped and not said yet, by every thread. */
const I_DROPPED = 3
/** The errno of the last failed write, for the record that says the drop. */
const I_ERRNO = 4
/** The part of the line in the buffer that stdout has not taken: [AT, END). */
const I_AT = 5
const I_END = 6
const CELLS = 8

const POLL_MS = 5
/** How long a pipe stays full before its reader is taken as stalled (and a line's default wait). */
const STALLED_AFTER_MS = 250
/** An error with no errno is told as an I/O error (Node's errno: Linux's, negated). */
const EIO = -5
const pause = new Int32Array(new SharedArrayBuffer(4))
const { getSystemErrorName } = process.getBuiltinModule('node:util')

export function newStdoutState(): SharedArrayBuffer {
  return new SharedArrayBuffer(CELLS * 4 + SAID_BYTES + MAX_LINE)
}

/** The process's stdout state: the main thread's, handed to each worker at spawn (WorkerInit). */
let processState: SharedArrayBuffer | undefined
export function stdoutState(): SharedArrayBuffer {
  processState ??= newStdoutState()
  return processState
}

/** Frees stdout's lock if the thread `tid`, which has ended, held it (the supervisor, at its exit). */
export function releaseStdoutOf(tid: number, state = processState): void {
  if (state) releaseHeldBy(new Int32Array(state, 0, CELLS), I_LOCK, tid)
}

/**
 * From now on this thread's lines wait for a stalled stdout until `until` (monotonic ms), however
 * long it has been stalled: the process's last lines, `supervisor.exit` and the drop said before
 * it, within what is left of the exit's budget.
 */
let lastUntil = 0
export function waitForStdoutUntil(until: number): void {
  lastUntil = until
}

export function createStdoutSink(opts: StdoutSinkOptions): (line: string) => void {
  const fd = opts.fd ?? 1
  const stallMs = opts.stallMs ?? STALLED_AFTER_MS
  const state = opts.state ?? stdoutState()
  const cells = new Int32Array(state, 0, CELLS)
  const bytes = Buffer.from(state, CELLS * 4)
  const lock = threadLock(cells, I_LOCK)
  const stalled = () => Atomics.load(cells, I_STALLED) === 1
  const record = (level: string, event: string, msg: string, extra: object) =>
    `${JSON.stringify({ time: new Date().toISOString(), level, service: opts.service, event, ...extra, msg })}\n`

  /** Under the lock: writes what is in the buffer until `until`; true once all of it is out. */
  function push(until: number): boolean {
    const end = Atomics.load(cells, I_END)
    let at = Atomics.load(cells, I_AT)
    /** Since when (monotonic ms) every write met a full pipe; 0 while one goes through. */
    let full = 0
    while (at < end) {
      try {
        at += writeSync(fd, bytes, at, end - at)
        Atomics.store(cells, I_AT, at)
        full = 0
      } catch (err) {
        const { errno = EIO, code } = err as NodeJS.ErrnoException
        Atomics.store(cells, I_ERRNO, errno)
        if (code === 'EPIPE') Atomics.store(cells, I_GONE, 1)
        const now = monotonicMs()
        if (code !== 'EAGAIN' || now >= until) return false
        // A pipe full for a moment while its reader reads is not a stalled reader (marked at the
        // first EAGAIN, 13-27% of a burst from four threads was dropped with `cat` reading). Full
        // for STALLED_AFTER_MS, it is: the threads waiting for the lock drop their lines now,
        // while this one waits on until `until` (the exit's last lines wait longer).
        full ||= now
        if (now - full >= STALLED_AFTER_MS && Atomics.compareExchange(cells, I_STALLED, 0, 1) === 0)
          Atomics.notify(cells, I_LOCK)
        Atomics.wait(pause, 0, 0, POLL_MS)
      }
    }
    Atomics.store(cells, I_AT, 0)
    Atomics.store(cells, I_END, 0)
    return true
  }

  function drop(): void {
    Atomics.add(cells, I_DROPPED, 1)
    Atomics.store(cells, I_STALLED, 1)
  }

  /** Puts `text` in the buffer, to be written from there. */
  function stage(text: string): void {
    Atomics.store(cells, I_AT, 0)
    Atomics.store(cells, I_END, bytes.write(text, 0))
  }

  function said(dropped: number): string {
    const code = getSystemErrorName(Atomics.load(cells, I_ERRNO) || EIO)
    const msg = `stdout took no lines for a while (${code}): ${dropped} lines were dropped`
    return record('warn', 'log.stdout.dropped', msg, { dropped, code })
  }

  return (line) => {
    if (Atomics.load(cells, I_GONE) === 1) return
    const size = Buffer.byteLength(line)
    if (size > MAX_LINE)
      line = record('warn', 'log.line.cut', `a line of ${size} bytes was not written`, { bytes: size })
    const last = lastUntil > 0
    const until = last ? lastUntil : stalled() ? 0 : monotonicMs() + stallMs
    // The lock is held for a write(2) or two, or by the first line to meet a stalled reader:
    // then this one is dropped at once (unless it is one of the last).
    const release = lock.acquireSync(until, () => !last && stalled())
    if (!release) return drop()
    try {
      // What is left of a line, whoever began it, goes first: until it is out, lines are dropped.
      if (!push(until)) return drop()
      const dropped = Atomics.load(cells, I_DROPPED) && Atomics.exchange(cells, I_DROPPED, 0)
      stage(dropped ? said(dropped) + line : line)
      if (push(until)) return void Atomics.store(cells, I_STALLED, 0)
      Atomics.store(cells, I_STALLED, 1)
      // Part of it went out: the rest stays for the next line, of any thread. None: both dropped.
      if (Atomics.load(cells, I_AT) > 0) return
      Atomics.store(cells, I_END, 0)
      Atomics.add(cells, I_DROPPED, dropped + 1)
    } finally {
      release()
    }
  }
}
