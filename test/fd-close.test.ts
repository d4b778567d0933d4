import assert from 'node:assert/strict'
import { closeSync, fstatSync, mkdtempSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { createLogFileWriter } from '../shared/log-file.js'
import { createLogger } from '../shared/logger.js'
import { createFileSink } from '../workers/gateway/sink-file.js'

/**
 * The sink and the log file hold plain descriptors (shared/fs-async.ts). A second close must not
 * close the number again: by then the kernel may have given it to another file, as here.
 */
const openFds = () => new Set(readdirSync('/proc/self/fd').map(Number))

async function closedOnce(open: () => Promise<{ close(): Promise<void> }>, dir: string): Promise<void> {
  const before = openFds()
  const file = await open()
  const mine = [...openFds()].filter((fd) => !before.has(fd))
  assert.equal(mine.length, 1, 'one descriptor opened')
  const first = file.close()
  const second = file.close() // concurrently with the first
  await first
  // Files are opened until one gets the freed number (the kernel gives the lowest free one).
  const spare: number[] = []
  let other = openSync(join(dir, 'other'), 'w')
  while (other !== mine[0]) {
    spare.push(other)
    assert.ok(spare.length < 64, `the descriptor ${mine[0]} was not freed`)
    other = openSync(join(dir, 'other'), 'w')
  }
  await second
  await file.close() // and once more, after
  assert.ok(fstatSync(other).isFile(), 'the other file is still open')
  for (const fd of [other, ...spare]) closeSync(fd)
}

test('the file sink closes its descriptor once, however often it is closed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-fd-'))
  const log = createLogger('gateway', 'silent')
  await closedOnce(() => createFileSink(join(dir, 'alerts.jsonl'), log), dir)
})

test('the log file writes what was queued, and closes its descriptor once, however often it is closed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-fd-'))
  await closedOnce(async () => {
    const w = createLogFileWriter(dir, 'info')
    w.write('{"msg":"one"}\n') // opens the file
    for (let i = 0; i < 100 && !readdirSync(dir).length; i++) await new Promise((r) => setTimeout(r, 5))
    return w
  }, dir)
  assert.equal(readFileSync(join(dir, 'sia-supervisor.info.log'), 'utf8'), '{"msg":"one"}\n')
})
