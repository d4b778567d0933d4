import { setTimeout as sleep } from 'node:timers/promises'
import { monotonicMs } from '../shared/clock.js'
import { type Logger, lastLines } from '../shared/logger.js'
import { hardExit } from './hard-exit.js'
import type { WorkerHandle } from './worker-handle.js'

/** What ending the threads still up may take once the exit is decided. */
const END_THREADS_MS = 250
/** Without a budget (init mode), what the exit's last lines may take. */
const LAST_LINES_MS = 1000

export interface ProcessExit {
  /** Threads not yet exited; the supervisor adds each one it spawns. */
  readonly threads: Set<WorkerHandle>
  /** A thread that `terminate()` could not end: the exit must not wait for it. */
  stuck(handle: WorkerHandle): void
  /**
   * The one way out: ends the threads still up, gives the logs their last chance (lastLines),
   * logs `supervisor.exit` (once, whoever calls first), and exits with `code`: through hardExit,
   * which waits for no thread of the process, when one may hold `process.exit()`.
   */
  leave(code: number, fields: Record<string, unknown>): Promise<never>
}

export interface ProcessExitOptions {
  /**
   * The instant (monotonic ms) the process must be out by: a run's, its budget's end plus the
   * second the contract gives to end threads. Asked as the exit begins; by default, LAST_LINES_MS on.
   */
  outBy?: () => number
  /**
   * How the process ends once all is said (tests stand in for it): `hard`, through hardExit when
   * a thread is still up (stuck in native code) or the LOG_DIR file has a write under way (a hung
   * volume: its request holds libuv's pool), either of which `process.exit()` would join for
   * good; else `process.exit()`. Not hardExit always: its execve starts a Node that only exits,
   * and a signal in those ~40 ms (a second SIGTERM, a SIGUSR1 to Node 22's inspector) ended the
   * process by that signal, or with 134, after `supervisor.exit` said 0.
   */
  end?: (code: number, hard: boolean) => never
}

export function createProcessExit(log: Logger, opts: ProcessExitOptions = {}): ProcessExit {
  const { outBy = () => monotonicMs() + LAST_LINES_MS, end = exitProcess } = opts
  const threads = new Set<WorkerHandle>()
  const stuck = new Set<WorkerHandle>()
  let leaving = false
  return {
    threads,
    stuck: (h) => void stuck.add(h),
    async leave(code, fields) {
      if (leaving) return new Promise<never>(() => {})
      leaving = true
      const by = outBy()
      // A thread marked stuck may only have been slow (a loaded machine): it gets the same wait.
      const ending = [...threads].map((h) => (stuck.has(h) ? h.exited : h.terminate('terminated')))
      await Promise.race([Promise.all(ending), sleep(END_THREADS_MS, undefined, { ref: false })])
      // The file's writes under way finish, or are given up, before the last records, and a
      // stalled stdout is waited for by those: all within what is left until `by`.
      const settled = await lastLines(by)
      // A thread still up now is stuck, whether or not its stop had time to find it so; and a
      // stuck thread makes the exit unclean, whatever its stop answered (DESIGN.md §1: code 1).
      // (One marked stuck that has ended since was only slow: its stop said how it went.)
      for (const h of threads) {
        if (!h.alive()) continue
        code = Math.max(code, 1)
        if (stuck.has(h)) continue
        stuck.add(h)
        log.error(
          { event: 'worker.stuck', service: h.service },
          `${h.service} thread could not be terminated`,
        )
      }
      // Last: nothing the run still does (it may be mid-shutdown when the watchdog leaves) is
      // logged after it, since the process is gone in the same turn.
      log.info(
        {
          event: 'supervisor.exit',
          code,
          ...fields,
          ...(stuck.size ? { stuck: [...stuck].map((h) => h.service) } : {}),
        },
        `exiting with ${code}`,
      )
      const threadUp = [...threads].some((h) => stuck.has(h) || h.alive())
      return end(code, threadUp || !settled)
    },
  }
}

function exitProcess(code: number, hard: boolean): never {
  if (hard) hardExit(code)
  process.exit(code)
}
