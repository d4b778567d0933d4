import type { Stats } from 'node:fs'
import { closeSync, constants, fstatSync, openSync, readSync, statSync } from '../builtins.js'
import { codedError } from '../errors.js'

/** The most a config or secret file may hold: a config file is a few KiB, a secret far less. */
export const MAX_FILE_BYTES = 1024 * 1024

/**
 * A config or secret file's bytes, read on the supervisor's main thread, where a read that blocks
 * blocks the signals too (DESIGN.md §1): a FIFO held it before anything was logged, SIGTERM
 * unheard, and /dev/zero grew it without bound. Only a regular file (through symlinks: Kubernetes
 * mounts a ConfigMap or a secret as one) of at most MAX_FILE_BYTES is read. Throws
 * ERR_NOT_REGULAR_FILE or ERR_FILE_TOO_LARGE naming the path, or the system's error.
 */
export function readSmallFile(path: string): Buffer {
  // stat never opens: no wait on a FIFO, nothing a device does when it is opened.
  check(path, statSync(path))
  // Put in its place since the stat, a FIFO opened without O_NONBLOCK would wait for a writer.
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    check(path, fstatSync(fd))
    // One byte past the limit tells a file that grew since its stat (or whose size is not
    // known beforehand, as /proc's) from one that fits.
    const buf = Buffer.allocUnsafe(MAX_FILE_BYTES + 1)
    let n = 0
    while (n < buf.length) {
      const got = readSync(fd, buf, n, buf.length - n, null)
      if (got === 0) break
      n += got
    }
    if (n > MAX_FILE_BYTES) throw tooLarge(path)
    return buf.subarray(0, n)
  } finally {
    closeSync(fd)
  }
}

function check(path: string, st: Stats): void {
  if (!st.isFile()) throw codedError('ERR_NOT_REGULAR_FILE', `${path} is ${kind(st)}, not a regular file`)
  if (st.size > MAX_FILE_BYTES) throw tooLarge(path)
}

const tooLarge = (path: string) =>
  codedError('ERR_FILE_TOO_LARGE', `${path} is larger than ${MAX_FILE_BYTES / 1024 / 1024} MiB`)

function kind(st: Stats): string {
  if (st.isDirectory()) return 'a directory'
  if (st.isFIFO()) return 'a FIFO'
  if (st.isSocket()) return 'a socket'
  if (st.isCharacterDevice()) return 'a character device'
  if (st.isBlockDevice()) return 'a block device'
  return 'of another kind'
}
