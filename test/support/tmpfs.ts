import { spawnSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'

/**
 * A 256 KiB tmpfs for a disk-full test, unmounted after the test (after `beforeUnmount`, which
 * must release files held open in it). Skips the test with the reason where mounting is not
 * permitted; returns undefined then.
 */
export function smallTmpfs(
  t: TestContext,
  prefix: string,
  beforeUnmount: () => Promise<unknown>,
): string | undefined {
  const mnt = mkdtempSync(join(tmpdir(), prefix))
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt], { encoding: 'utf8' })
  if (mounted.status !== 0) {
    t.skip(`cannot mount a tmpfs here (${mounted.stderr.trim() || mounted.error?.message}): needs root`)
    return undefined
  }
  t.after(async () => {
    await beforeUnmount()
    if (spawnSync('umount', [mnt]).status !== 0) spawnSync('umount', ['-l', mnt])
  })
  return mnt
}

/** Fills the file system of `dir` with `dir/filler` until the write fails; returns that error's code. */
export function fillDisk(dir: string): string | undefined {
  const fd = openSync(join(dir, 'filler'), 'w')
  try {
    const block = Buffer.alloc(4096, 'f')
    for (;;) writeSync(fd, block)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code
  } finally {
    closeSync(fd)
  }
}
