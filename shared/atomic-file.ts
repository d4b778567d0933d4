import { randomBytes } from 'node:crypto'
import { dirname } from 'node:path'
import { ensureDir } from './ensure-dir.js'
import { close, fchmod, fsync, open, rename, rm, syncDir, writeAll } from './fs-async.js'

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
 * certificate. The renames then run in the order given, and each directory is synced so that the
 * new names survive a power loss. A staged file that is not renamed is removed.
 */
export async function writeFilesAtomic(files: readonly FileContent[]): Promise<void> {
  const staged: string[] = []
  try {
    for (const f of files) staged.push(await stage(f))
    for (const [i, f] of files.entries()) {
      await rename(staged[i]!, f.path)
      staged[i] = ''
    }
  } finally {
    await Promise.all(staged.map((tmp) => tmp && rm(tmp, { force: true }).catch(() => {})))
  }
  for (const dir of new Set(files.map((f) => dirname(f.path)))) await syncDir(dir)
}

async function stage({ path, data, mode }: FileContent): Promise<string> {
  await ensureDir(dirname(path))
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
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
