import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { constants, fstatSync, mkdirSync, openSync, readSync, writeSync } from './builtins.js'
import { monotonicMs } from './clock.js'
import { close, fstat, ftruncate, mkdir, open, read, rename, stat, writeAll } from './fs-async.js'
import { createStdoutSink } from './stdout-sink.js'

/**
 * LOG_DIR: the JSON lines also go to `<dir>/sia-supervisor.<LEVEL>.log`, rotated by size as SIA
 * rotates its log file (1 MB, 5 old files: `.1` newest to `.5` oldest). One writer for the whole
 * process, on the main thread: workers forward their lines to it, so no two threads ever rotate
 * the same file. Writes are asynchronous and queued up to a bound: a slow, full or unwritable disk
 * costs dropped file lines (counted, and said once on stdout), never a blocked or failed service.
 * Each batch is written at its offset (the file is not opened O_APPEND). What others do to the
 * file is looked for before a write: moved or deleted (an external logrotate, an operator; looked
 * for at most once a `checkMs`), it is opened again at its path; truncated (logrotate's
 * copytruncate; looked for at each batch), the writes go on from its new end, leaving no hole. A
 * last line left unfinished by a process killed mid-write is ended at open, so the next line
 * starts on a line of its own.
 *
 * At exit, the file ends with the process's last lines unless its disk hangs, and the exit never
 * waits on that disk past a bound: the exit first gives the writes under way a bounded time to
 * finish (`settle`), then writes what is left synchronously (`flushSync`), but only if no write,
 * open or rename is still under way: on a disk that hangs (a network file system), a synchronous
 * call would hang the exit itself, which must happen whatever the disk does. The lines are then
 * on stdout only, and that is said there.
 */
export interface LogFileOptions {
  maxBytes?: number
  backups?: number
  /** Lines waiting for the disk beyond this are dropped. */
  maxQueueBytes?: number
  /** After a failure, how long before the file is tried again. */
  retryMs?: number
  /** How often, at most, the path is checked for being still the file written. */
  checkMs?: number
}

export interface LogFileWriter {
  readonly path: string
  write(line: string): void
  /**
   * Before the process's last lines: waits up to `ms` for the writes under way, and from now on
   * writes nothing in the background (the lines are queued for `flushSync`). False, and said on
   * stdout, if a write is still under way: the lines from here on are on stdout only.
   */
  settle(ms: number): Promise<boolean>
  /** At process exit: what is queued, synchronously, unless a write is still under way. */
  flushSync(): void
  close(): Promise<void>
}

const BATCH_BYTES = 64 * 1024
const NEWLINE = 0x0a

export function createLogFileWriter(dir: string, level: string, opts: LogFileOptions = {}): LogFileWriter {
  const maxBytes = opts.maxBytes ?? 1024 * 1024
  const backups = Math.max(1, opts.backups ?? 5)
  const maxQueueBytes = opts.maxQueueBytes ?? 4 * 1024 * 1024
  const retryMs = opts.retryMs ?? 5_000
  const checkMs = opts.checkMs ?? 1_000
  let checkAt = 0
  const path = join(dir, `sia-supervisor.${level}.log`)
  let queue: string[] = []
  let queuedBytes = 0
  let fd: number | undefined
  let size = 0
  /** The drain in progress: the file is closed only once its write has settled. */
  let draining: Promise<void> | undefined
  /** Set by close(): no line is taken or written after it. */
  let closing: Promise<void> | undefined
  /** Set by settle(): lines are queued for flushSync, not written in the background. */
  let settled = false
  /** Since a write failed (or the queue overflowed) until one succeeds: file lines are dropped. */
  let failing = false
  let retryAt = 0
  let dropped = 0

  const toStdout = createStdoutSink({ service: 'supervisor' })
  /** Said on stdout only (not through the logger, which would feed the file again). */
  const say = (lvl: 'warn' | 'info', event: string, msg: string, extra: object) => {
    const rec = {
      time: new Date().toISOString(),
      level: lvl,
      service: 'supervisor',
      event,
      file: path,
      ...extra,
      msg,
    }
    toStdout(`${JSON.stringify(rec)}\n`)
  }

  async function openFile(): Promise<void> {
    await mkdir(dir, { recursive: true })
    const opened = await open(path, constants.O_RDWR | constants.O_CREAT, 0o644)
    let end = (await fstat(opened)).size
    if (end > 0) {
      const last = Buffer.alloc(1)
      await read(opened, last, 0, 1, end - 1)
      if (last[0] !== NEWLINE) {
        await writeAll(opened, Buffer.from('\n'), end)
        end++
      }
    }
    fd = opened
    size = end
    checkAt = monotonicMs() + checkMs
  }

  /** openFile at exit, synchronously. */
  function openFileSync(): number {
    mkdirSync(dir, { recursive: true })
    const opened = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644)
    size = fstatSync(opened).size
    const last = Buffer.alloc(1)
    if (size > 0 && readSync(opened, last, 0, 1, size - 1) === 1 && last[0] !== NEWLINE) {
      writeSync(opened, '\n', size)
      size++
    }
    return opened
  }

  /** The path still names the file open, and where it ends now (see the header). */
  async function followFile(): Promise<void> {
    checkAt = monotonicMs() + checkMs
    const [onDisk, open] = await Promise.all([stat(path).catch(() => undefined), fstat(fd!)])
    if (onDisk?.ino === open.ino && onDisk.dev === open.dev) {
      size = open.size
      return
    }
    await close(fd!).catch(() => {})
    fd = undefined
    await openFile()
    say('info', 'log.file.reopened', `${path} was moved or deleted: writing a new one`, {})
  }

  async function rotate(): Promise<void> {
    const old = fd
    fd = undefined
    if (old !== undefined) await close(old)
    for (let i = backups - 1; i >= 1; i--) {
      await rename(`${path}.${i}`, `${path}.${i + 1}`).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err
      })
    }
    await rename(path, `${path}.1`)
    await openFile()
  }

  async function drain(): Promise<void> {
    try {
      while (queue.length && !closing) {
        if (fd === undefined) await openFile()
        else if (monotonicMs() >= checkAt) await followFile()
        // Truncated since (copytruncate, which runs at any instant, not at checkMs): the batch
        // goes at its new end, not at the old one past a hole of NUL bytes. One fstat a batch.
        else size = Math.min(size, (await fstat(fd)).size)
        // A file never grows past maxBytes (a single longer line gets a file of its own).
        if (size > 0 && size + Buffer.byteLength(queue[0]!) > maxBytes) await rotate()
        let batch = ''
        let bytes = 0
        let n = 0
        while (n < queue.length) {
          const next = Buffer.byteLength(queue[n]!)
          if (n > 0 && (bytes + next > BATCH_BYTES || size + bytes + next > maxBytes)) break
          batch += queue[n]
          bytes += next
          n++
        }
        await writeAll(fd!, Buffer.from(batch), size)
        size += bytes
        queue = queue.slice(n)
        queuedBytes -= batch.length
        if (failing) {
          say('info', 'log.file.recovered', `writing ${path} again; ${dropped} lines were dropped`, {
            dropped,
          })
          failing = false
          dropped = 0
        }
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'EIO'
      if (fd !== undefined) {
        // A write that failed part way (ENOSPC) left the start of a line: cut it, so that the
        // next line, once there is room again, starts on a line of its own.
        await ftruncate(fd, size).catch(() => {})
        await close(fd).catch(() => {})
      }
      fd = undefined
      // What is queued is dropped: the disk is the problem, memory must not become one.
      dropped += queue.length
      queue = []
      queuedBytes = 0
      if (!failing) {
        failing = true
        say(
          'warn',
          'log.file.failed',
          `cannot write ${path} (${code}): dropping file lines; stdout goes on`,
          {
            err: { code, message: (err as Error).message },
          },
        )
      }
      retryAt = monotonicMs() + retryMs
    }
  }

  return {
    path,
    write(line) {
      if (closing) return
      if (failing && monotonicMs() < retryAt) {
        dropped++
        return
      }
      if (queuedBytes + line.length > maxQueueBytes) {
        dropped++
        if (!failing) {
          failing = true
          say('warn', 'log.file.failed', `${path} is not keeping up: dropping file lines; stdout goes on`, {
            err: { code: 'EQUEUEFULL', message: 'the disk is slower than the logs' },
          })
        }
        return
      }
      queue.push(line)
      queuedBytes += line.length
      if (settled) return
      draining ??= drain().finally(() => {
        draining = undefined
      })
    },
    async settle(ms) {
      settled = true
      if (draining) {
        // Its timer holds the loop, as a real write's request does (a test's fake write does not).
        const ac = new AbortController()
        await Promise.race([draining, sleep(ms, undefined, { signal: ac.signal }).catch(() => {})])
        ac.abort()
      }
      if (!draining) return true
      say(
        'warn',
        'log.file.failed',
        `a write to ${path} has not returned for ${Math.round(ms)} ms at exit: the last lines are on stdout only`,
        { err: { code: 'ETIMEDOUT', message: 'the disk did not finish a write before the exit' } },
      )
      return false
    },
    flushSync() {
      // Not skipped for `failing`: a failed write emptied the queue already, and one that fails
      // here is caught; an overflow (a slow disk, not a failing one) leaves lines to write. Skipped
      // while a write, an open or a rename is under way (settle gave it its time): on a disk
      // that hangs, a synchronous call would hang the exit too, and a write behind it could land
      // before it.
      if (closing || queue.length === 0 || draining) return
      try {
        // No file yet: the first line is one of the last, or a failure closed it.
        fd ??= openFileSync()
        const text = queue.join('')
        writeSync(fd, text, size)
        size += Buffer.byteLength(text)
        queue = []
        queuedBytes = 0
      } catch {}
    },
    /** Once, whoever asks: a descriptor closed twice could be another file's by then. */
    close() {
      closing ??= (async () => {
        await draining
        if (fd !== undefined) await close(fd).catch(() => {})
        fd = undefined
      })()
      return closing
    },
  }
}
