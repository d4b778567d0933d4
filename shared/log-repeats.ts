import type { Logger } from './logger.js'

export type RepeatLevel = 'info' | 'warn' | 'error'

/** The window of every service's gate: a failure that repeats is said at most twice in it. */
export const REPEAT_WINDOW_MS = 10_000

/**
 * A record that repeats (every token request failing the same way while ZTS is down) written
 * twice a window at most: the first in full, then, as the window closes, how many more there
 * were (`repeats`). A line with a stack for each request floods the pod's log and costs the
 * server the throughput it needs to answer; the count says as much as the copies did. At debug
 * level every record is written.
 */
export interface RepeatGate {
  /**
   * Writes `fields` with `detail` unless a record of the same `fields` was written within the
   * window; then counts it. `fields` name the kind (an event and a status: a small, fixed set,
   * never what a client sends); `detail` is what only the first needs (the error, the path).
   */
  log(
    level: RepeatLevel,
    fields: Readonly<Record<string, string | number>>,
    detail: object,
    msg: string,
  ): void
  /** Writes the counts not written yet (at stop): no repeat goes unsaid. */
  flush(): void
}

interface Window {
  level: RepeatLevel
  fields: Readonly<Record<string, string | number>>
  msg: string
  ends: number
  repeats: number
  timer: NodeJS.Timeout | undefined
}

export function createRepeatGate(log: Logger, windowMs: number, now = () => performance.now()): RepeatGate {
  const open = new Map<string, Window>()

  const close = (kind: string, w: Window) => {
    open.delete(kind)
    if (w.timer) clearTimeout(w.timer)
    if (w.repeats === 0) return
    log[w.level](
      { ...w.fields, repeats: w.repeats, windowMs },
      `${w.repeats} more in ${windowMs / 1000} s: ${w.msg}`,
    )
  }

  return {
    log(level, fields, detail, msg) {
      if (log.isLevelEnabled('debug')) return void log[level]({ ...fields, ...detail }, msg)
      const kind = Object.values(fields).join('\n')
      const t = now()
      const w = open.get(kind)
      if (w && t < w.ends) {
        w.repeats++
        // The count is written when the window closes, even if nothing like it comes again.
        w.timer ??= setTimeout(() => close(kind, w), w.ends - t).unref()
        return
      }
      if (w) close(kind, w)
      open.set(kind, { level, fields, msg, ends: t + windowMs, repeats: 0, timer: undefined })
      log[level]({ ...fields, ...detail }, msg)
    },
    flush() {
      for (const [kind, w] of open) close(kind, w)
    },
  }
}
