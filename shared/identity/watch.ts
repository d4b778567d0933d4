import type { StatWatcher } from 'node:fs'
import { unwatchFile, watchFile } from '../builtins.js'

const POLL_MS = 500

/**
 * Calls `onChange` when any of `paths` changes. Polls stat rather than using inotify: a file
 * replaced by rename (how every writer here and kubelet's secret volumes update) keeps being seen.
 */
export function watchFiles(paths: string[], onChange: () => void, signal: AbortSignal): void {
  const watchers: [string, StatWatcher][] = []
  for (const p of paths) {
    const listener = (cur: { mtimeMs: number; ino: number }, prev: { mtimeMs: number; ino: number }) => {
      if (cur.mtimeMs !== prev.mtimeMs || cur.ino !== prev.ino) onChange()
    }
    watchers.push([p, watchFile(p, { interval: POLL_MS, persistent: false }, listener)])
    signal.addEventListener('abort', () => unwatchFile(p, listener), { once: true })
  }
}
