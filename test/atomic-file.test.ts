import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { test } from 'node:test'
import { besideName, sweepLeftovers, writeFilesAtomic } from '../shared/atomic-file.js'

/** A key and a certificate on disk, as a previous refresh left them. */
function pair(): { dir: string; key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sia-atomic-'))
  const key = join(dir, 'key.pem')
  const cert = join(dir, 'cert.pem')
  writeFileSync(key, 'old key')
  writeFileSync(cert, 'old cert')
  return { dir, key, cert }
}

const set = (key: string, cert: string) => [
  { path: key, data: 'new key', mode: 0o600 },
  { path: cert, data: 'new cert', mode: 0o644 },
]

/** The set failed and left the key as it was, and in `dir` only `names`. */
function assertKeyKept(dir: string, key: string, names: string[], why: string): void {
  assert.equal(readFileSync(key, 'utf8'), 'old key', why)
  assert.deepEqual(readdirSync(dir).sort(), names, 'no staged or linked file left beside the key')
}

test('a set whose second rename fails puts the first back: never a new key beside an old certificate', async (t) => {
  const { dir, key } = pair()
  // An append-only directory (chattr +a): a file may be created and linked there, not replaced.
  const locked = join(dir, 'locked')
  mkdirSync(locked)
  const cert = join(locked, 'cert.pem')
  writeFileSync(cert, 'old cert')
  if (spawnSync('chattr', ['+a', locked]).status !== 0) return t.skip('chattr +a is not available here')
  t.after(() => spawnSync('chattr', ['-a', locked]))
  await assert.rejects(writeFilesAtomic(set(key, cert)), { code: 'EPERM' })
  assertKeyKept(dir, key, ['cert.pem', 'key.pem', 'locked'], 'the key renamed first was put back')
  assert.equal(readFileSync(cert, 'utf8'), 'old cert')
})

test('a target that is a directory fails the set before any rename', async () => {
  const { dir, key } = pair()
  const cert = join(dir, 'cert-dir')
  mkdirSync(cert)
  writeFileSync(join(cert, 'inside'), 'x')
  await assert.rejects(writeFilesAtomic(set(key, cert)))
  assertKeyKept(dir, key, ['cert-dir', 'cert.pem', 'key.pem'], 'no rename was made')
})

test('a set that succeeds replaces every file and leaves nothing beside them; a file that was not there is created', async () => {
  const { dir, key, cert } = pair()
  const ca = join(dir, 'ca.pem')
  await writeFilesAtomic([...set(key, cert), { path: ca, data: 'new ca', mode: 0o644 }])
  assert.deepEqual(
    [key, cert, ca].map((f) => readFileSync(f, 'utf8')),
    ['new key', 'new cert', 'new ca'],
  )
  assert.deepEqual(readdirSync(dir).sort(), ['ca.pem', 'cert.pem', 'key.pem'])
})

test('leftovers of interrupted writes beside the outputs are swept: a minute old or more, of those outputs only', async () => {
  const { dir, key, cert } = pair()
  const leftovers = [`${key}.0123456789ab.tmp`, `${cert}.ba9876543210.old`]
  const others = [join(dir, 'other.pem.0123456789ab.tmp'), `${key}.notahexvalue.tmp`]
  for (const f of [...leftovers, ...others]) writeFileSync(f, 'private')
  assert.deepEqual(await sweepLeftovers([key, cert]), [], 'just written: a write under way, left alone')
  assert.deepEqual((await sweepLeftovers([key, cert], 0)).sort(), [...leftovers].sort())
  assert.deepEqual(readdirSync(dir).sort(), [
    'cert.pem',
    'key.pem',
    'key.pem.notahexvalue.tmp',
    'other.pem.0123456789ab.tmp',
  ])
})

test('a file name of up to 255 bytes is written (its staged file takes a shorter name), and what an interrupted write left of it is swept', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-atomic-'))
  // 255 bytes with a two-byte character: names are cut by bytes, never in a character.
  const long = join(dir, `${'é'.repeat(3)}${'k'.repeat(245)}.pem`)
  const other = join(dir, `${'é'.repeat(3)}${'k'.repeat(244)}x.pem`)
  await writeFilesAtomic([
    { path: long, data: 'new key', mode: 0o600 },
    { path: other, data: 'other key', mode: 0o600 },
  ])
  assert.equal(readFileSync(long, 'utf8'), 'new key')
  assert.equal(readFileSync(other, 'utf8'), 'other key')
  assert.deepEqual(readdirSync(dir).sort(), [basename(long), basename(other)].sort())
  // Replacing both (each linked aside first) works the same.
  await writeFilesAtomic([
    { path: long, data: 'newer key', mode: 0o600 },
    { path: other, data: 'newer other', mode: 0o600 },
  ])
  assert.equal(readFileSync(long, 'utf8'), 'newer key')
  assert.equal(readdirSync(dir).length, 2)

  // What a write cut short leaves has that shorter name: swept as the file's own, the other's not.
  const leftover = join(dir, `${besideName(basename(long))}.0123456789ab.tmp`)
  const others = join(dir, `${besideName(basename(other))}.0123456789ab.tmp`)
  assert.ok(Buffer.byteLength(basename(leftover)) <= 255)
  assert.notEqual(besideName(basename(long)), besideName(basename(other)), 'two long names, two prefixes')
  writeFileSync(leftover, 'private')
  writeFileSync(others, 'private')
  assert.deepEqual(await sweepLeftovers([long], 0), [leftover])
  assert.ok(readdirSync(dir).includes(basename(others)))
})
