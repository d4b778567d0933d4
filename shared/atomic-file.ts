import { createHash, randomBytes } from 'node:crypto'
import { basename, dirname, join } from 'node:path'
import { ensureDir } from './ensure-dir.js'
import { close, fchmod, fsync, link, open, readdir, rename, rm, stat, syncDir, writeAll } from './fs-async.js'
import type { Logger } from './logger.js'

export interface FileContent {
  path: string
  data: string | Uint8Array
  mode: number
}

/**
 * Writes `data` to `path` so that a reader sees the old file or the new one, never a torn one:
 * temp file in the same directory (created with `mode`, so a key is never readable by others,
 * even for an instant), fsync, rename.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode: number): Promise<void> {
  return writeFilesAtomic([{ path, data, mode }])
}

/**
 * Writes files that belong together (a key and its certificate): every one is staged in full,
 * as `writeFileAtomic` does, before any is renamed into place, so a failed write (a full disk, a
 * directory not writable) leaves every old file as it was rather than a new key beside an old
 * certificate. A rename can fail too once others are done (a file bind-mounted in place: EBUSY; a
 * directory where a file was): each old file is first linked aside, and on a failed rename those
 * already renamed are put back (a file that was not there is removed). A target that cannot be
 * linked aside (another file system under it) fails the set before any rename. The renames run
 * in the order given, and each directory is synced so that the new names survive a power loss.
 * Staged files and the old ones linked aside are removed.
 */
export async function writeFilesAtomic(files: readonly FileContent[]): Promise<void> {
  const staged: string[] = []
  const aside: (string | undefined)[] = []
  let renamed = 0
  try {
    for (const f of files) staged.push(await stage(f))
    // One file alone is never left half-changed: its rename happens or it does not.
    if (files.length > 1) for (const f of files) aside.push(await linkAside(f.path))
    for (const [i, f] of files.entries()) {
      await rename(staged[i]!, f.path)
      staged[i] = ''
      renamed = i + 1
    }
  } catch (err) {
    // Back as they were, the last renamed first; what cannot be put back is left as it is.
    for (let i = renamed - 1; i >= 0; i--) {
      const old = aside[i]
      await (old ? rename(old, files[i]!.path) : rm(files[i]!.path, { force: true })).catch(() => {})
      aside[i] = undefined
    }
    throw err
  } finally {
    const leftover = [...staged, ...aside].filter((p): p is string => !!p)
    await Promise.all(leftover.map((p) => rm(p, { force: true }).catch(() => {})))
  }
  for (const dir of new Set(files.map((f) => dirname(f.path)))) await syncDir(dir)
}

/** The longest file name the usual file systems take, in bytes. */
const NAME_MAX = 255
/** What a staged or linked-aside file adds to its name: `.<12 hex>.tmp` or `.old`. */
const SUFFIX_BYTES = 17

/**
 * The name a staged or linked-aside file of `name` starts with: `name` itself, or, when the
 * suffix would take it past NAME_MAX (a long domain and role in a template), as much of it as
 * leaves room, then `~` and a hash of the whole name (two long names never share one). A file
 * name of 239 to 255 bytes could not be written: its staged file's name was too long (ENAMETOOLONG).
 */
export function besideName(name: string): string {
  if (Buffer.byteLength(name) + SUFFIX_BYTES <= NAME_MAX) return name
  const hash = `~${createHash('sha256').update(name).digest('hex').slice(0, 16)}`
  let cut = ''
  for (const ch of name) {
    if (Buffer.byteLength(cut + ch) + hash.length + SUFFIX_BYTES > NAME_MAX) break
    cut += ch
  }
  return cut + hash
}

/** `path`'s staged or linked-aside file: beside it, a random suffix (`.tmp`, `.old`). */
function beside(path: string, ext: 'tmp' | 'old'): string {
  return join(dirname(path), `${besideName(basename(path))}.${randomBytes(6).toString('hex')}.${ext}`)
}

/** A hard link to the file at `path` beside it, or undefined when there is none. */
async function linkAside(path: string): Promise<string | undefined> {
  const old = beside(path, 'old')
  try {
    await link(path, old)
    return old
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

async function stage({ path, data, mode }: FileContent): Promise<string> {
  await ensureDir(dirname(path))
  const tmp = beside(path, 'tmp')
  const fd = await open(tmp, 'wx', mode)
  let written = false
  try {
    await writeAll(fd, typeof data === 'string' ? Buffer.from(data) : data)
    await fchmod(fd, mode) // the umask may have narrowed or the file pre-existed: state the mode exactly
    await fsync(fd)
    written = true
  } finally {
    await close(fd)
    if (!written) await rm(tmp, { force: true }).catch(() => {})
  }
  return tmp
}

/** The old files linked aside beside `path` (`<file>.<hex>.old`) that a write left, if any. */
export async function linkedAside(path: string): Promise<string[]> {
  const prefix = `${besideName(basename(path))}.`
  const entries = await readdir(dirname(path)).catch(() => [] as string[])
  return entries
    .filter((e) => e.startsWith(prefix) && /^[0-9a-f]{12}\.old$/.test(e.slice(prefix.length)))
    .map((e) => join(dirname(path), e))
}

/** Older than this, a staged or linked-aside file beside an output belongs to no write under way. */
const STALE_MS = 60_000
const LEFTOVER = /^(.*)\.[0-9a-f]{12}\.(?:tmp|old)$/

/**
 * Removes what interrupted writes left beside `paths`: a staged `<file>.<hex>.tmp` (a private key,
 * for a key file) or an `<file>.<hex>.old` linked aside, when a thread was ended between staging
 * and renaming (the watchdog, out of heap, SIGKILL). Only files a minute old or more: a write under
 * way in another thread is not cut. Resolves to what it removed; what cannot be read is left.
 */
export async function sweepLeftovers(paths: readonly string[], minAgeMs = STALE_MS): Promise<string[]> {
  const byDir = new Map<string, Set<string>>()
  for (const p of paths) {
    const names = byDir.get(dirname(p)) ?? new Set<string>()
    names.add(besideName(basename(p)))
    byDir.set(dirname(p), names)
  }
  const removed: string[] = []
  // Date.now() is cut to the millisecond, a ctime is not: one made in this millisecond is before now.
  const before = Date.now() + 1 - minAgeMs
  for (const [dir, names] of byDir) {
    const entries = await readdir(dir).catch(() => [] as string[])
    for (const entry of entries) {
      const of = LEFTOVER.exec(entry)?.[1]
      if (of === undefined || !names.has(of)) continue
      const file = join(dir, entry)
      const st = await stat(file).catch(() => undefined)
      // ctime: a link aside keeps the old file's mtime, but linking it changed its inode just now.
      if (!st?.isFile() || st.ctimeMs > before) continue
      if (
        await rm(file, { force: true }).then(
          () => true,
          () => false,
        )
      )
        removed.push(file)
    }
  }
  return removed
}

/** sweepLeftovers at a service's start, and what it removed said as `event`. */
export async function sweepLeftoversAtStart(
  paths: readonly string[],
  log: Logger,
  event: string,
  minAgeMs = STALE_MS,
): Promise<void> {
  const files = await sweepLeftovers(paths, minAgeMs)
  if (files.length > 0) log.info({ event, files }, 'removed files an interrupted write left')
}
