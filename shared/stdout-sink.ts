import { writeSync } from './builtins.js'
import { monotonicMs } from './clock.js'

/**
 * Every thread's JSON lines to stdout: a write(2) a line, so a line logged just before a
 * `terminate()` or an exit is out. What stdout cannot take costs lines, never a thread: a full
 * disk or an I/O error drops the line; a reader that stops reading (a full pipe, which Node makes
 * non-blocking: EAGAIN) is waited for `stallMs` at most, then lines are tried once each, without
 * waiting, until it reads again; a reader gone (EPIPE) ends stdout for this thread. The lines
 * dropped are counted and said once stdout takes lines again. pino's destination retried EAGAIN
 * for ever (a paused log reader froze the supervisor: no signal handled, no budget kept) and
 * threw any other error (a full disk ended the process).
 */
export interface StdoutSinkOptions {
  fd?: number
  /** How long a line waits for a reader that stopped, once; then lines no longer wait. */
  stallMs?: number
  /** The `service` of the line that says what was dropped. */
  service: string
}

const POLL_MS = 5
const pause = new Int32Array(new SharedArrayBuffer(4))

export function createStdoutSink(opts: StdoutSinkOptions): (line: string) => void {
  const fd = opts.fd ?? 1
  const stallMs = opts.stallMs ?? 250
  let gone = false
  /** Since a line could not be written until one is: lines are tried once, not waited for. */
  let stalled = false
  let dropped = 0
  let lastError = ''
  /** A line written in part when stdout stopped: finished before any other, so none interleave. */
  let rest: Buffer | undefined

  /** Writes `buf` from `offset` until `until`; returns how far it got. EPIPE ends stdout. */
  function push(buf: Buffer, offset: number, until: number): number {
    let at = offset
    while (at < buf.length) {
      try {
        at += writeSync(fd, buf, at)
        continue
      } catch (err) {
        if (!failed(err) || monotonicMs() >= until) return at
      }
      Atomics.wait(pause, 0, 0, POLL_MS)
    }
    return at
  }

  /** Notes the error; true when it is worth waiting for (EAGAIN: a reader that is behind). */
  function failed(err: unknown): boolean {
    lastError = (err as NodeJS.ErrnoException).code ?? 'EIO'
    if (lastError === 'EPIPE') gone = true
    return lastError === 'EAGAIN'
  }

  /**
   * Writes `line` whole, or keeps what is left of it in `rest`; false if none of it went out. The
   * string first: a Buffer only for what a partial write left (a line a write(2), as a rule).
   */
  function send(line: string, until: number): boolean {
    let written: number
    try {
      written = writeSync(fd, line)
    } catch (err) {
      if (!failed(err) || until === 0) return false
      written = 0
    }
    const buf = Buffer.from(line)
    if (written === buf.length) return true
    const at = push(buf, written, until)
    if (at === 0) return false
    if (at < buf.length) rest = buf.subarray(at)
    return true
  }

  return (line) => {
    if (gone) return
    const until = stalled ? 0 : monotonicMs() + stallMs
    if (rest) {
      const at = push(rest, 0, until)
      rest = at < rest.length ? rest.subarray(at) : undefined
    }
    if (rest || !send(line, until)) {
      stalled = true
      dropped++
      return
    }
    // Said once the line that got through is whole: a rest still pending keeps the count.
    if (!stalled || rest) return
    stalled = false
    if (dropped === 0) return
    const said = {
      time: new Date().toISOString(),
      level: 'warn',
      service: opts.service,
      event: 'log.stdout.dropped',
      dropped,
      code: lastError,
      msg: `stdout took no lines for a while (${lastError}): ${dropped} lines were dropped`,
    }
    dropped = 0
    send(`${JSON.stringify(said)}\n`, 0)
  }
}
