import { randomBytes } from 'node:crypto'
import { dirname } from 'node:path'
import { ensureDir } from './ensure-dir.js'
import { close, fchmod, fsync, open, rename, rm, writeAll } from './fs-async.js'

/**
 * Writes `data` to `path` so that a reader sees the old file or the new one, never a torn one:
 * temp file in the same directory (created with `mode`, so a key is never readable by others,
 * even for an instant), fsync, rename.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode: number): Promise<void> {
  await ensureDir(dirname(path))
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  const fd = await open(tmp, 'wx', mode)
  try {
    await writeAll(fd, typeof data === 'string' ? Buffer.from(data) : data)
    await fchmod(fd, mode) // the umask may have narrowed or the file pre-existed: state the mode exactly
    await fsync(fd)
  } finally {
    await close(fd)
  }
  try {
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}
