import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'

const HARD_EXIT = new URL('../supervisor/hard-exit.js', import.meta.url).href

/**
 * A process with a worker thread blocked in open() on a FIFO nobody writes to (terminate() cannot
 * reach it) and, when `pool`, a thread-pool request blocked the same way, that calls hardExit(3)
 * with `execPath`. Resolves with its exit and what it printed; SIGKILLed if it hangs.
 */
function run(execPath: string, pool: boolean): Promise<{ code: number | null; stdout: string }> {
  const fifo = join(mkdtempSync(join(tmpdir(), 'sia-hard-exit-')), 'fifo')
  execFileSync('mkfifo', [fifo])
  const script = `
    import { Worker } from 'node:worker_threads'
    import { open } from 'node:fs'
    import { hardExit } from ${JSON.stringify(HARD_EXIT)}
    const w = new Worker('process.getBuiltinModule("node:fs").openSync(${JSON.stringify(fifo)}, "r")', { eval: true })
    w.on('online', () => {
      ${pool ? `open(${JSON.stringify(fifo)}, 'r', () => {})` : ''}
      process.on('exit', () => process.stdout.write('exit handler ran'))
      setTimeout(() => hardExit(3, ${JSON.stringify(execPath)}), 100)
    })`
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 20_000,
    killSignal: 'SIGKILL',
  })
  let stdout = ''
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString()
  })
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout })))
}

// The exit handlers run first, as process.exit() runs them (the LOG_DIR file's last lines).
test('hardExit leaves a thread stuck in native code and a stuck thread-pool request behind, with its code, its exit handlers run', async () => {
  assert.deepEqual(await run(process.execPath, true), { code: 3, stdout: 'exit handler ran' })
})

test('hardExit without execve (it failed) falls back to the C exit(): a stuck thread is still left behind', async () => {
  assert.deepEqual(await run('/nonexistent/node', false), { code: 3, stdout: 'exit handler ran' })
})
