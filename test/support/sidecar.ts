import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { after } from 'node:test'

export const CLI = new URL('../../supervisor/cli.js', import.meta.url).pathname

export interface LogRecord {
  time: string
  level: string
  service: string
  msg: string
  event?: string
  [field: string]: unknown
}

export interface Sidecar {
  proc: ChildProcess
  /** Every JSON line printed so far, in order. */
  records: LogRecord[]
  /** Lines on stdout that were not JSON (must stay empty). */
  junk: string[]
  dataDir: string
  stderr(): string
  /** Resolves with the first record (already seen or future) matching `pred`. */
  waitFor(pred: (r: LogRecord) => boolean, timeoutMs?: number): Promise<LogRecord>
  waitForEvent(event: string, fields?: Record<string, unknown>, timeoutMs?: number): Promise<LogRecord>
  /**
   * Resolves once `n` records of `event` (with `fields`) have arrived. Logs come over their own
   * pipe: after an HTTP answer, the worker's record about it may not have been read yet.
   */
  waitForCount(
    event: string,
    n: number,
    fields?: Record<string, unknown>,
    timeoutMs?: number,
  ): Promise<LogRecord>
  /** Base URL of a service's server, from its `server.listening` record. */
  url(service: string, timeoutMs?: number): Promise<string>
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  kill(signal?: NodeJS.Signals): void
  events(event: string): LogRecord[]
}

export interface SidecarOptions {
  env?: Record<string, string>
  args?: string[]
  dataDir?: string
  /**
   * What to spawn instead of `node CLI ...args`: a wrapper (a sandbox, another user), given the
   * Node binary and the CLI's argv; `cwd` is the working directory.
   */
  command?: (node: string, argv: string[]) => { file: string; args: string[]; cwd?: string }
  /** A descriptor for the sidecar's stdout instead of a pipe read here (no records are read then). */
  stdout?: number
}

/** Every server on an ephemeral loopback port, so tests never race for a port. */
const TEST_ENV = {
  TOKEN_SERVER_ADDR: '127.0.0.1:0',
  GATEWAY_ADDR: '127.0.0.1:0',
  METRICS_SERVER_ADDR: '127.0.0.1:0',
  HEALTH_CHECK_ADDR: '127.0.0.1:0',
  SHUTDOWN_DELAY: '0',
  LOG_LEVEL: 'info',
}

/**
 * Every sidecar this test process started. Whatever a test does (an assertion that throws before
 * its stop, a timeout), none outlives the test file: the ones still running are SIGKILLed as it exits.
 */
const running = new Set<ChildProcess>()
const killAll = () => {
  for (const p of running) p.kill('SIGKILL')
}
process.once('exit', killAll)
// Under the test runner a live child keeps the file's process up, so 'exit' would never come.
// The file's own `after` hooks (registered later, so run later) may still stop theirs cleanly:
// whatever is left a few seconds on is killed.
if (process.env.NODE_TEST_CONTEXT) after(() => void setTimeout(killAll, 5000).unref())

/** Runs the built CLI as a child process, the way an operator does. */
export function startSidecar(opts: SidecarOptions = {}): Sidecar {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'sia-test-'))
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    ...TEST_ENV,
    DATA_DIR: dataDir,
    ...opts.env,
  }
  const argv = [CLI, ...(opts.args ?? [])]
  const cmd = opts.command?.(process.execPath, argv) ?? { file: process.execPath, args: argv }
  const proc = spawn(cmd.file, cmd.args, {
    env,
    cwd: cmd.cwd,
    stdio: ['ignore', opts.stdout ?? 'pipe', 'pipe'],
  })
  running.add(proc)
  proc.once('exit', () => running.delete(proc))
  const records: LogRecord[] = []
  const junk: string[] = []
  const waiters = new Set<{ pred: (r: LogRecord) => boolean; resolve: (r: LogRecord) => void }>()
  let stderr = ''
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString()
  })
  if (proc.stdout)
    createInterface({ input: proc.stdout }).on('line', (line) => {
      let r: LogRecord
      try {
        r = JSON.parse(line) as LogRecord
      } catch {
        junk.push(line)
        return
      }
      records.push(r)
      for (const w of waiters) {
        if (w.pred(r)) {
          waiters.delete(w)
          w.resolve(r)
        }
      }
    })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('close', (code, signal) => resolve({ code, signal }))
  })

  const waitFor = (pred: (r: LogRecord) => boolean, timeoutMs = 15_000) => {
    const seen = records.find(pred)
    if (seen) return Promise.resolve(seen)
    return new Promise<LogRecord>((resolve, reject) => {
      const w = {
        pred,
        resolve: (r: LogRecord) => {
          clearTimeout(timer)
          resolve(r)
        },
      }
      const timer = setTimeout(() => {
        waiters.delete(w)
        reject(new Error(`no matching log record within ${timeoutMs}ms; stderr: ${stderr.slice(-500)}`))
      }, timeoutMs)
      waiters.add(w)
      void exited.then(({ code, signal }) => {
        if (!waiters.has(w)) return
        waiters.delete(w)
        clearTimeout(timer)
        // A start that failed is why most runs end early: say what it was.
        const failed = records.filter(
          (r) => r.event === 'service.start.failed' || r.event === 'worker.crashed',
        )
        const last = [...failed, ...records.slice(-3)].map((r) => JSON.stringify(r).slice(0, 600))
        reject(
          new Error(
            `sidecar exited (code ${code}, signal ${signal}) before a matching record; last records: ${last.join(' ')}; stderr: ${stderr.slice(-500)}`,
          ),
        )
      })
    })
  }
  const matches = (r: LogRecord, event: string, fields: Record<string, unknown>) =>
    r.event === event && Object.entries(fields).every(([k, v]) => r[k] === v)

  return {
    proc,
    records,
    junk,
    dataDir,
    stderr: () => stderr,
    waitFor,
    waitForEvent: (event, fields = {}, timeoutMs) => waitFor((r) => matches(r, event, fields), timeoutMs),
    waitForCount(event, n, fields = {}, timeoutMs) {
      let seen = 0
      return waitFor((r) => matches(r, event, fields) && ++seen === n, timeoutMs)
    },
    async url(service, timeoutMs) {
      const r = await waitFor((x) => x.event === 'server.listening' && x.service === service, timeoutMs)
      return `http://127.0.0.1:${r.port as number}`
    },
    exited,
    kill(signal = 'SIGTERM') {
      proc.kill(signal)
    },
    events: (event) => records.filter((r) => r.event === event),
  }
}

/** Starts a sidecar and waits until every enabled service has started. */
export async function startReady(opts: SidecarOptions = {}): Promise<Sidecar> {
  const sc = startSidecar(opts)
  await sc.waitForEvent('supervisor.ready', {}, 30_000)
  return sc
}

/** Sends SIGTERM and resolves with the exit code. */
export async function stop(sc: Sidecar, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (sc.proc.exitCode === null) sc.kill(signal)
  return (await sc.exited).code
}
