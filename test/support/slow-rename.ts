import { writeFileSync } from 'node:fs'

/**
 * Preloaded into a sidecar under test (NODE_OPTIONS=--import): a rename whose source matches
 * SLOW_RENAME (a regular expression: a staged file) waits SLOW_RENAME_MS first, and creates
 * SLOW_RENAME_MARK as it starts waiting. A write held between staging and renaming, as on a slow
 * volume, for a test to end or fail the process meanwhile. With SLOW_RENAME_ONCE=1 a rename is
 * held only while the mark is absent: the first writer is held, one that writes beside it is not.
 */
const pattern = process.env.SLOW_RENAME
if (pattern) {
  const fs = process.getBuiltinModule('node:fs')
  const rename = fs.rename
  const held = new RegExp(pattern)
  const ms = Number(process.env.SLOW_RENAME_MS)
  const mark = process.env.SLOW_RENAME_MARK
  const once = process.env.SLOW_RENAME_ONCE === '1'
  fs.rename = ((from: string, to: string, done: (err: NodeJS.ErrnoException | null) => void) => {
    if (!held.test(from) || (once && mark && fs.existsSync(mark))) return rename(from, to, done)
    if (mark) writeFileSync(mark, from)
    setTimeout(() => rename(from, to, done), ms)
  }) as typeof fs.rename
}
