/**
 * The file system calls the services make, as promises over `node:fs`'s callback functions.
 * Why not `node:fs/promises`: loading it loads its FileHandle's helpers too — readline's
 * interface (for `readLines`), file streams, directory iteration and watchers — about 0.7 MiB
 * of heap and code pages in every thread that imports it, seven threads here (measured on Node
 * 26, README "Memory, session 15"); the callback functions are in every isolate already. Files
 * are plain descriptors: whoever opens one closes it once its last call has settled.
 */
const fs = process.getBuiltinModule('node:fs')
const { promisify } = process.getBuiltinModule('node:util')

export const readFile = promisify(fs.readFile)
export const mkdir = promisify(fs.mkdir)
export const stat = promisify(fs.stat)
export const lstat = promisify(fs.lstat)
export const rename = promisify(fs.rename)
export const rm = promisify(fs.rm)
export const link = promisify(fs.link)
export const readdir = promisify(fs.readdir)

/** Opens `path` and resolves to its descriptor. */
export const open = promisify(fs.open)
export const close = promisify(fs.close)
export const fstat = promisify(fs.fstat)
export const ftruncate = promisify(fs.ftruncate)
export const fsync = promisify(fs.fsync)
export const fdatasync = promisify(fs.fdatasync)
export const fchmod = promisify(fs.fchmod)
export const read = promisify(fs.read)
const write = promisify(fs.write)
const writev = promisify(fs.writev)

/**
 * Writes all of `buf` at `position` (`null`: at the file's offset, the end under O_APPEND): a
 * write may take less than it was given (a full disk, a signal), and the rest goes in the next.
 */
export async function writeAll(fd: number, buf: Uint8Array, position: number | null = null): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const { bytesWritten } = await write(
      fd,
      buf,
      done,
      buf.length - done,
      position === null ? null : position + done,
    )
    done += bytesWritten
  }
}

/**
 * Writes all of `bufs`, in order, at the file's offset (the end under O_APPEND), in one system
 * call (libuv splits past IOV_MAX): a batch's lines are written where they lie, never copied into
 * one buffer first. A write that took less than it was given goes on with the rest.
 */
export async function writevAll(fd: number, bufs: readonly Uint8Array[]): Promise<void> {
  let rest = bufs.filter((b) => b.length > 0)
  while (rest.length > 0) {
    let { bytesWritten } = await writev(fd, rest)
    let i = 0
    for (; i < rest.length && bytesWritten >= rest[i]!.length; i++) bytesWritten -= rest[i]!.length
    rest = i < rest.length ? [rest[i]!.subarray(bytesWritten), ...rest.slice(i + 1)] : []
  }
}

/**
 * A name made in a directory (a file created, a rename) is durable once the directory is synced;
 * a file system that cannot sync one is skipped.
 */
export async function syncDir(dir: string): Promise<void> {
  let fd: number
  try {
    fd = await open(dir, 'r')
  } catch {
    return
  }
  try {
    await fsync(fd)
  } catch {
    // EINVAL on some file systems: nothing more can be done for the name.
  } finally {
    await close(fd)
  }
}
