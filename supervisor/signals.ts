import { constants } from 'node:os'

/**
 * The process's signal policy, installed as the CLI's very first statement (before any other
 * module loads), so a signal at any instant is handled, never the default "die at once":
 * - SIGINT/SIGTERM stop the run; one that arrives before the run exists waits for it.
 * - SIGUSR1 would open the Node inspector (unauthenticated, on 127.0.0.1:9229): a listener of our
 *   own replaces Node's, so it never does.
 * - SIGHUP reloads the configuration.
 * - Every other catchable signal that would end the process is logged and ignored. Left alone:
 *   SIGPROF (V8's CPU profiler), SIGABRT and the faults (SIGSEGV…), and those whose default is
 *   already to ignore or to continue.
 */
export const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const
const IGNORED = [
  'SIGQUIT',
  'SIGUSR1',
  'SIGUSR2',
  'SIGALRM',
  'SIGVTALRM',
  'SIGXCPU',
  'SIGXFSZ',
  'SIGPOLL',
  'SIGPWR',
  'SIGSTKFLT',
  'SIGSYS',
  'SIGTRAP',
  'SIGTSTP',
  'SIGTTIN',
  'SIGTTOU',
] as const

export interface SignalHandlers {
  stop(signal: NodeJS.Signals): void
  reload(signal: NodeJS.Signals): void
  other(signal: NodeJS.Signals): void
}

export interface SignalRouter {
  /** Routes signals to `handlers`; the ones that arrived before are delivered now, in order. */
  attach(handlers: SignalHandlers): void
}

export function installSignalHandlers(): SignalRouter {
  let handlers: SignalHandlers | undefined
  const early: [keyof SignalHandlers, NodeJS.Signals][] = []
  const route = (kind: keyof SignalHandlers) => (signal: NodeJS.Signals) => {
    if (handlers) handlers[kind](signal)
    else early.push([kind, signal])
  }
  for (const s of STOP_SIGNALS) process.on(s, route('stop'))
  process.on('SIGHUP', route('reload'))
  for (const s of IGNORED) if (s in constants.signals) process.on(s, route('other'))
  return {
    attach(h) {
      handlers = h
      for (const [kind, signal] of early.splice(0)) h[kind](signal)
    },
  }
}
