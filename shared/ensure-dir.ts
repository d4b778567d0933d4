import { dirname } from 'node:path'
import { codedError } from './errors.js'
import { mkdir, stat, syncDir } from './fs-async.js'

/**
 * `mkdir -p` that always ends: Node's `mkdir(…, { recursive: true })` never settles for some
 * paths (under /proc it loops in the threadpool, and the thread can then not even be
 * terminated). One level at a time, each failure surfaces with its errno. Each directory it
 * makes has its name made durable (its parent synced): a file synced inside a directory whose own
 * entry was lost in a power cut is lost with it (the local authority's key, an alert answered 2xx).
 */
export async function ensureDir(path: string, mode?: number): Promise<void> {
  try {
    if ((await stat(path)).isDirectory()) return
    throw codedError('ENOTDIR', `${path} exists and is not a directory`)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const parent = dirname(path)
  if (parent !== path) await ensureDir(parent, mode)
  try {
    await mkdir(path, mode === undefined ? {} : { mode })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return
  }
  if (parent !== path) await syncDir(parent)
}
