const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM']

/** Routes SIGINT/SIGTERM to `handler` for the life of the process (no default exit). */
export function onSignals(handler: (signal: NodeJS.Signals) => void): void {
  for (const s of SIGNALS) process.on(s, handler)
}
