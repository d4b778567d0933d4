import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { ensureDir } from '../shared/ensure-dir.js'

test('ensureDir makes every missing level with its mode, and is a no-op on a directory that exists', async () => {
  const base = mkdtempSync(join(tmpdir(), 'sia-ensure-'))
  const deep = join(base, 'a', 'b', 'c')
  await ensureDir(deep, 0o700)
  for (const dir of [join(base, 'a'), join(base, 'a', 'b'), deep]) {
    assert.ok(statSync(dir).isDirectory(), dir)
    assert.equal(statSync(dir).mode & 0o777, 0o700, dir)
  }
  await ensureDir(deep)
  await assert.rejects(ensureDir(join(import.meta.filename, 'x')), { code: 'ENOTDIR' })
})

test('each directory ensureDir makes has its name made durable: its parent is synced after the mkdir', (t) => {
  if (spawnSync('strace', ['-V']).status !== 0) return t.skip('strace is not installed')
  const base = mkdtempSync(join(tmpdir(), 'sia-ensure-'))
  const trace = join(mkdtempSync(join(tmpdir(), 'sia-strace-')), 'trace')
  const script = `
    import { ensureDir } from ${JSON.stringify(new URL('../shared/ensure-dir.js', import.meta.url).href)}
    await ensureDir(${JSON.stringify(join(base, 'a', 'b'))})`
  const r = spawnSync(
    'strace',
    [
      '-f',
      '-e',
      'trace=mkdir,mkdirat,openat,fsync',
      '-o',
      trace,
      process.execPath,
      '--input-type=module',
      '-e',
      script,
    ],
    { encoding: 'utf8', timeout: 30_000 },
  )
  assert.equal(r.status, 0, r.stderr)
  const calls = readFileSync(trace, 'utf8').split('\n')
  for (const [made, parent] of [
    [join(base, 'a'), base],
    [join(base, 'a', 'b'), join(base, 'a')],
  ]) {
    const at = calls.findIndex((l) => /mkdir(at)?\(/.test(l) && l.includes(`"${made}"`) && / = 0$/.test(l))
    assert.ok(at >= 0, `${made} was made`)
    const fd = calls
      .slice(at)
      .map((l) => new RegExp(`openat\\(AT_FDCWD, "${parent}", O_RDONLY[^)]*\\) = (\\d+)`).exec(l)?.[1])
      .find((x) => x !== undefined)
    assert.ok(fd, `${parent} was opened after`)
    assert.ok(
      calls.slice(at).some((l) => new RegExp(`fsync\\(${fd}\\) += 0`).test(l)),
      `and synced`,
    )
  }
})
