import { dirname } from 'node:path'
import { constants, fstatSync } from '../../shared/builtins.js'
import { monotonicMs } from '../../shared/clock.js'
import { withDeadline } from '../../shared/deadline.js'
import { ensureDir } from '../../shared/ensure-dir.js'
import { codedError } from '../../shared/errors.js'
import {
  close,
  fdatasync,
  fstat,
  ftruncate,
  open,
  read,
  stat,
  syncDir,
  writevAll,
} from '../../shared/fs-async.js'
import type { Logger } from '../../shared/logger.js'
import { forEachSliced } from '../../shared/slices.js'
import type { ThreadLock } from '../../shared/thread-lock.js'
import type { Sink, SinkRecord } from './sink.js'

interface OpenFile {
  fd: number
  /** A regular file (not /dev/stdout, a FIFO): repaired, cut back, probed, followed by its path. */
  regular: boolean
  dev: number
  ino: number
}

interface Waiter {
  bufs: Buffer[]
  /** A probe: `bufs` is filler, appended durably and cut back again, alone in its append. */
  probe?: boolean
  resolve(): void
  reject(err: unknown): void
}

const TAIL_CHUNK = 64 * 1024
/**
 * A batch's lines are encoded, in slices of the loop, into buffers of about this many characters,
 * and appended as they are: one string of a 4 MiB batch's lines (5 MB) encoded at once, then
 * copied into the group's buffer, held the loop ~45 ms.
 */
const ENCODE_CHARS = 64 * 1024
/** A probe needs room for at least this, and at most this (the size of the write that failed). */
const PROBE_MIN_BYTES = 4096
const PROBE_MAX_BYTES = 1024 * 1024
/** How often, at most, the path is looked up to see that it still names the file open. */
const PATH_CHECK_MS = 1000
/** How long closing waits for the append in flight. */
const CLOSE_WAIT_MS = 10_000
/**
 * 'a+' and O_DSYNC: every write returns once its data is on the disk (what write then fdatasync
 * give), in one trip to the thread pool instead of two.
 */
const APPEND_DURABLY = constants.O_APPEND | constants.O_CREAT | constants.O_RDWR | constants.O_DSYNC

/**
 * JSON lines appended to one file; `write` resolves only once its lines are on the disk (O_DSYNC),
 * so a 2xx means the alert is on disk. Group commit: requests that arrive while a sync is in flight are
 * written together and share the next sync, so the cost of durability is paid once per burst, not
 * once per request. A batch's lines stay together.
 *
 * The file never holds a torn line: at open, a partial trailing line (a crash or a full disk in
 * the middle of an append) is cut back to the last newline and logged (`gateway.sink.repaired`);
 * a failed append (ENOSPC, EIO, a failed sync) is cut back to the size the file had before it, so
 * the next append starts on a clean line; if that cut fails, the next append or probe, either
 * generation's, cuts the partial line first. Only a regular file is repaired (not /dev/stdout, a FIFO),
 * and not by a successor (`repair: false`) at its start: while its predecessor drains, the file's
 * end may be the predecessor's append still being copied in, whose lines were answered 2xx; a torn
 * line a crash left was cut back when that predecessor opened the file. A file opened later (the
 * path could not be opened at start, or another file is there now) is repaired by either: that
 * open is made in an append or a probe, under the lock, so no append of the other's is under way.
 */
export async function createFileSink(
  path: string,
  log: Logger,
  closeWaitMs = CLOSE_WAIT_MS,
  { repair = true, lock }: { repair?: boolean; lock?: ThreadLock } = {},
): Promise<Sink> {
  /** The file open, and which one it is; none while the path cannot be opened. */
  let file: OpenFile | undefined
  let checkAt = 0
  const openFile = async (repairNow: boolean): Promise<OpenFile> => {
    await ensureDir(dirname(path))
    const fd = await open(path, APPEND_DURABLY, 0o640)
    try {
      const st = await fstat(fd)
      const regular = st.isFile()
      // O_DSYNC makes the file's data durable, not its name: a file just created, and the alerts
      // answered 2xx in it, would be lost with its name in a power cut.
      if (regular) await syncDir(dirname(path))
      if (regular && repairNow) await repairTail(fd, path, log)
      checkAt = monotonicMs() + PATH_CHECK_MS
      return { fd, regular, dev: st.dev, ino: st.ino }
    } catch (err) {
      await close(fd).catch(() => {})
      throw err
    }
  }
  /**
   * The file to append to: the path is looked up at most once a second (PATH_CHECK_MS), and a file moved
   * away (rotated) or deleted under us is left for a new one at the path (`gateway.sink.reopened`):
   * appended to, the deleted one took the alerts answered 2xx with it. `gone`: the open file is
   * known deleted (no link left), so the path is looked up now. Opened again too after
   * the path could not be (a directory gone, a file where the directory was): the write, or
   * the probe, fails until it can.
   */
  const current = async (gone = false): Promise<OpenFile> => {
    if (file && !gone && (!file.regular || monotonicMs() < checkAt)) return file
    if (file) {
      checkAt = monotonicMs() + PATH_CHECK_MS
      const onDisk = await stat(path).catch(() => undefined)
      if (onDisk?.ino === file.ino && onDisk.dev === file.dev) return file
      const old = file
      file = undefined
      await close(old.fd).catch(() => {})
      // Another file renamed over ours may end in a line its writer left torn: appended to as it
      // is, our first line was glued to it.
      file = await openFile(true)
      log.warn(
        { event: 'gateway.sink.reopened', path },
        `${path} was moved or deleted: appending to a new file there`,
      )
      return file
    }
    file = await openFile(true)
    return file
  }
  try {
    file = await openFile(repair)
  } catch (err) {
    // Not the start's failure: the gateway starts not ready and probes the path every second
    // (a crash-restarted gateway whose path broke meanwhile failed every start: a crash loop
    // that stopped the whole sidecar).
    log.error(
      {
        event: 'gateway.sink.failed',
        path,
        err: { code: (err as NodeJS.ErrnoException).code, message: (err as Error).message },
      },
      `cannot open the sink file ${path}: not ready until it can`,
    )
  }
  let queue: Waiter[] = []
  let flushing: Promise<void> | undefined
  let closing: Promise<void> | undefined
  /** Bytes of the last append that failed: what a probe must find room for. */
  let failedBytes = 0

  const cutBack = async (fd: number, size: number) => {
    try {
      await ftruncate(fd, size)
    } catch (err) {
      log.error(
        { event: 'gateway.sink.repair.failed', path, err: { message: (err as Error).message } },
        'cannot cut a failed append back; the next append or probe cuts its partial line first',
      )
      throw err
    }
  }
  /**
   * Under the lock, before every append and probe: a partial last line (an append or a probe
   * whose cut-back failed, this generation's or the other's) is cut back to the last newline.
   * Never past a whole line: a size owed by one generation and cut later took the other's lines
   * appended meanwhile, answered 2xx. One read of the last byte per append (a group's).
   */
  const cleanEnd = async (fd: number, size: number): Promise<number> => {
    if (!(await torn(fd, size))) return size
    await repairTail(fd, path, log)
    return (await fstat(fd)).size
  }

  const append = async (bufs: Buffer[]) => {
    let { fd, regular } = await current()
    // Asked every time, not tracked: the file may have been truncated (rotated) under us, or
    // deleted (`rm`, or another file renamed over it) since the path was last looked up: its
    // alerts would go with it. fstat of an open file is answered from its inode in memory:
    // synchronous, one system call; through the thread pool, a trip there and a turn of the loop
    // on every append.
    let st = regular ? fstatSync(fd) : undefined
    if (st?.nlink === 0) {
      ;({ fd, regular } = await current(true))
      st = regular ? fstatSync(fd) : undefined
    }
    const before = st ? await cleanEnd(fd, st.size) : 0
    try {
      await writevAll(fd, bufs)
    } catch (err) {
      failedBytes = bufs.reduce((n, b) => n + b.length, 0)
      if (regular) {
        await cutBack(fd, before).then(
          () => log.debug({ event: 'gateway.sink.truncated', size: before }, 'failed append cut back'),
          () => {},
        )
      }
      throw err
    }
  }

  /** Room for `buf` right now: appended durably, then cut back whatever happens. */
  const probeOnce = async (bufs: Buffer[]) => {
    const { fd } = await current()
    const before = await cleanEnd(fd, (await fstat(fd)).size)
    try {
      await writevAll(fd, bufs)
    } finally {
      await cutBack(fd, before)
    }
  }

  const flush = async () => {
    while (queue.length > 0) {
      // Probes go alone (they are cut back); records that queued meanwhile share one append.
      const probe = queue[0]?.probe ? queue.shift() : undefined
      const group = probe ? [probe] : queue.filter((w) => !w.probe)
      if (!probe) queue = queue.filter((w) => w.probe)
      // While a gateway drains beside its successor both append here: each append and probe is
      // the file's alone, or a cut-back (a probe's, a failed append's) took the other's lines,
      // answered 2xx, with it.
      const release = await lock?.acquire()
      try {
        await (probe ? probeOnce(probe.bufs) : append(group.flatMap((w) => w.bufs)))
        for (const w of group) w.resolve()
      } catch (err) {
        for (const w of group) w.reject(err)
      } finally {
        // The other generation waited: its turn before this one's next group.
        if (release?.()) await new Promise((r) => setImmediate(r))
      }
    }
    flushing = undefined
  }
  const enqueue = (w: Omit<Waiter, 'resolve' | 'reject'>, signal?: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason)
      // Closing, or closed: its descriptor's number may be another file's by the time this runs.
      if (closing) return reject(codedError('ERR_SINK_CLOSED', `the sink ${path} is closed`))
      const waiter: Waiter = { ...w, resolve, reject }
      // Still queued when the write's signal aborts: it never reaches the file. Already in an
      // append: that append decides. (The listener lives as long as the request's signal does.)
      signal?.addEventListener(
        'abort',
        () => {
          const at = queue.indexOf(waiter)
          if (at < 0) return
          queue.splice(at, 1)
          reject(signal.reason)
        },
        { once: true },
      )
      queue.push(waiter)
      flushing ??= flush()
    })

  return {
    name: 'file',
    usable: () => file !== undefined,
    async write(records: readonly SinkRecord[], signal?: AbortSignal) {
      const bufs: Buffer[] = []
      let lines = ''
      await forEachSliced(records, (r) => {
        lines += `${JSON.stringify(r)}\n`
        if (lines.length < ENCODE_CHARS) return
        bufs.push(Buffer.from(lines))
        lines = ''
      })
      if (lines) bufs.push(Buffer.from(lines))
      return enqueue({ bufs }, signal)
    },
    /**
     * Filler of the size of the write that failed (no newline: if the process dies before it is
     * cut back, the next start cuts it as a partial line) is appended durably and cut back.
     * Room on the disk again (ENOSPC) or a device that writes again (EIO) shows here.
     */
    async probe() {
      // A FIFO or a terminal has no room to probe: it takes writes again once the append it
      // hangs in (nobody reads) has returned.
      if (file && !file.regular) return flushing
      const size = Math.min(PROBE_MAX_BYTES, Math.max(PROBE_MIN_BYTES, failedBytes))
      await enqueue({ bufs: [Buffer.alloc(size, 0x20)], probe: true })
    },
    /**
     * Once, whoever asks: a descriptor closed twice could be another file's by then. An append
     * that has not returned within `closeWaitMs`, or by the shutdown's `deadline` if that comes
     * first (a FIFO nobody reads, a frozen file system), may never return: the descriptor is left
     * open under it rather than closed (its number could be reused before that append runs), and
     * the close fails, so that the rest of the shutdown goes on in its budget. That thread cannot
     * end while the append holds it; the supervisor leaves it behind.
     */
    close(deadline = Number.POSITIVE_INFINITY) {
      closing ??= (async () => {
        const waitMs = Math.max(0, Math.min(closeWaitMs, deadline - monotonicMs()))
        await withDeadline(
          waitMs,
          async () => flushing,
          () =>
            codedError(
              'ERR_SINK_HUNG',
              waitMs < closeWaitMs
                ? `an append to ${path} has not returned by the shutdown's deadline`
                : `an append to ${path} has not returned in ${waitMs}ms`,
            ),
        )
        const open = file
        file = undefined
        if (open) await close(open.fd)
      })()
      return closing
    },
  }
}

/** Whether the file's last byte is not a newline: it ends in a partial line. */
async function torn(fd: number, size: number): Promise<boolean> {
  if (size === 0) return false
  const last = Buffer.alloc(1)
  const { bytesRead } = await read(fd, last, 0, 1, size - 1)
  return bytesRead === 1 && last[0] !== 0x0a
}

/** Cuts a partial trailing line (no final newline) back to the last newline, and logs it. */
async function repairTail(fd: number, path: string, log: Logger): Promise<void> {
  const size = (await fstat(fd)).size
  let end = size
  const chunk = Buffer.alloc(TAIL_CHUNK)
  while (end > 0) {
    const start = Math.max(0, end - TAIL_CHUNK)
    const { bytesRead } = await read(fd, chunk, 0, end - start, start)
    const nl = chunk.subarray(0, bytesRead).lastIndexOf(0x0a)
    if (nl >= 0) {
      end = start + nl + 1
      break
    }
    end = start
  }
  if (end === size) return
  await ftruncate(fd, end)
  await fdatasync(fd)
  log.warn(
    { event: 'gateway.sink.repaired', path, bytes: size - end },
    `cut a partial trailing line of ${size - end} bytes from the sink file`,
  )
}
