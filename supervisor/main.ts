import { readFileSync } from '../shared/builtins.js'
import { monotonicMs } from '../shared/clock.js'
import type { Invocation } from '../shared/config/load.js'
import type { Config } from '../shared/config/types.js'
import { distUrl } from '../shared/dist-url.js'
import { createLogger, type Logger, lastLines } from '../shared/logger.js'
import { initBudgetMs } from '../shared/start-deadline.js'
import { createProcessExit } from './exit.js'
import { hardExit } from './hard-exit.js'
import { loadConfigOnce } from './load-config.js'
import type { Prespawned } from './prespawn.js'
import { run } from './run.js'
import type { SignalRouter } from './signals.js'

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string
}

/**
 * The CLI once its signal handlers are in place: configuration, then the run or the init.
 * `prespawned` are the service threads already booting (cli.ts); whatever does not run ends them.
 */
export async function main(signals: SignalRouter, prespawned: Prespawned): Promise<void> {
  let invocation: Invocation
  try {
    invocation = loadConfigOnce(process.argv.slice(2), process.env)
  } catch (err) {
    // One clear line naming the setting; no service has been started.
    process.stderr.write(`sia-supervisor: ${(err as Error).message}\n`)
    process.exit(2)
  }
  if (invocation.kind !== 'run' || invocation.config.mode === 'init') prespawned.discard()
  if (invocation.kind === 'help') {
    const { helpText } = await import('./help.js')
    return void process.stdout.write(`${helpText(version)}\n`)
  }
  if (invocation.kind === 'version') return void process.stdout.write(`${version}\n`)

  const log = createLogger('supervisor', invocation.config.logLevel, { logDir: invocation.config.logDir })
  log.info({ event: 'supervisor.boot', version, pid: process.pid, mode: invocation.config.mode }, 'booting')
  const warn = (warnings: typeof invocation.warnings, fields = {}) => {
    for (const w of warnings)
      log.warn({ event: 'config.warning', ...w, ...fields }, `${w.setting}: ${w.reason}`)
  }
  warn(invocation.warnings)
  const { config } = invocation
  // SIGHUP: the configuration as the files say now (the environment and flags cannot change),
  // with what it warns of, as at boot.
  const reread = async () => {
    const next = loadConfigOnce(process.argv.slice(2), process.env)
    if (next.kind !== 'run') throw new Error('unreachable: the arguments asked for a run at boot')
    return { config: next.config, warn: () => warn(next.warnings, { reload: true }) }
  }
  const done =
    config.mode === 'init' ? init(config, log, signals) : run(config, log, signals, reread, prespawned)
  done.catch(async (err: unknown) => {
    await lastLines(monotonicMs() + INTERNAL_ERROR_EXIT_MS)
    log.fatal({ event: 'supervisor.exit', code: 1, cause: 'internal-error', err }, 'supervisor failed')
    // Threads may be up, some stuck: process.exit() would join them (exit.ts says why not).
    hardExit(1)
  })
}

/** What the last lines of a run that failed inside the supervisor itself may take (lastLines). */
const INTERNAL_ERROR_EXIT_MS = 1000

/**
 * How long an init cut short (at its deadline, or told to stop) has to answer before it is taken
 * as stuck: a write under way finishes or undoes itself, leaving no staged file (a private key).
 */
const INIT_GRACE_MS = 1000

/**
 * MODE=init (an init container): fetch the identity once on this thread, spawn nothing, within
 * the start deadlines of the two services that would (certificate, then token). It always leaves
 * with hardExit: a file operation may still be stuck in libuv's thread pool (a read of a FIFO or
 * of a hung NFS mount, or cut short by a signal or the deadline), and process.exit() joins that
 * pool for ever: the init container would never end, its pod never start. It leaves as a run
 * does (exit.ts), with no thread to end: the LOG_DIR file's writes and a stalled stdout get their
 * bounded chance at its last lines.
 */
async function init(config: Config, log: Logger, signals: SignalRouter): Promise<never> {
  const budgetMs = initBudgetMs(config)
  const cut = new AbortController()
  const timer = setTimeout(() => cut.abort(), budgetMs)
  const exit = createProcessExit(log, { end: (code) => hardExit(code) })
  let stoppedBy: NodeJS.Signals | undefined
  // An init container told to stop has not fetched its identity: that is a failure.
  const stopped = (signal: NodeJS.Signals) => exit.leave(1, { cause: 'signal', signal })
  signals.attach({
    stop(signal) {
      // The init is cut short and given INIT_GRACE_MS, as at its deadline; told again, it leaves.
      if (stoppedBy) void stopped(signal)
      stoppedBy = signal
      cut.abort()
    },
    reload: (signal) => log.info({ event: 'supervisor.signal.ignored', signal }, `ignoring ${signal}`),
    other: (signal) => log.info({ event: 'supervisor.signal.ignored', signal }, `ignoring ${signal}`),
  })
  // Only an init container fetches the identity on this thread: a run never loads that code here.
  // By path, so the supervisor's bundle leaves it out (and its built-ins: node:crypto's facade
  // alone loads webcrypto at every boot).
  const initMode = distUrl('shared/identity/init-mode.js').href
  const { runInit } = (await import(initMode)) as typeof import('../shared/identity/init-mode.js')
  // Cut short, its waits abort and it answers for itself (a backup write cut short after
  // init.done is still 0); one that cannot answer within INIT_GRACE_MS is stuck.
  const timedOut = new Promise<'timeout'>((resolve) => {
    const grace = () => setTimeout(() => resolve('timeout'), INIT_GRACE_MS)
    if (cut.signal.aborted) grace()
    else cut.signal.addEventListener('abort', grace)
  })
  const outcome = await Promise.race([runInit(config, log, cut.signal), timedOut])
  clearTimeout(timer)
  // Stopped once the identity was fetched (init.done; a backup write still under way is given up,
  // said so), the init did its work: 0, as it would have been a moment earlier.
  if (stoppedBy && outcome !== 0) return stopped(stoppedBy)
  if (outcome === 'timeout') log.error({ event: 'init.failed', budgetMs }, `no identity within ${budgetMs}ms`)
  return exit.leave(outcome === 'timeout' ? 1 : outcome, { cause: 'init' })
}
