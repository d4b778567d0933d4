import type { Logger } from './logger.js'

export type RepeatLevel = 'info' | 'warn' | 'error'

/** The window of every service's gate: a failure that repeats is said at most twice in it. */
export const REPEAT_WINDOW_MS = 10_000

/**
 * Records of one kind written whole in a window: the first of each variant, up to this many
 * variants. A client looping on one bad body must not hide another's different mistake, nor a
 * provider's new way of failing, for the rest of the window.
 */
export const VARIANTS_PER_WINDOW = 5

/**
 * A record that repeats (every token request failing the same way while ZTS is down) written
 * whole once a window, then counted: as the window closes, one record says how many more there
 * were (`repeats`). A line with a stack for each request floods the pod's log and costs the
 * server the throughput it needs to answer; the count says as much as the copies did. At debug
 * level, and once the gate is flushed (at stop), every record is written whole.
 */
export interface RepeatGate {
  /**
   * Writes `fields` with `detail` unless a record of the same `fields` and `variant` was written
   * within the window (or VARIANTS_PER_WINDOW variants were); then counts it. `fields` name the
   * kind (an event and a status: a small, fixed set, never what a client sends); `variant` tells
   * records of one kind apart (the reason, the error, the path); `detail` is what only a record
   * written whole carries.
   */
  log(
    level: RepeatLevel,
    fields: Readonly<Record<string, string | number>>,
    variant: string,
    detail: object,
    msg: string,
  ): void
  /**
   * Writes the counts not written yet, and from then on every record whole (at stop: the
   * requests the shutdown itself fails come after it, and no window would close for them).
   */
  flush(): void
}

interface Window {
  level: RepeatLevel
  fields: Readonly<Record<string, string | number>>
  /** The variants written whole in this window. */
  written: Set<string>
  ends: number
  repeats: number
  timer: NodeJS.Timeout | undefined
}

export function createRepeatGate(log: Logger, windowMs: number, now = () => performance.now()): RepeatGate {
  const open = new Map<string, Window>()
  let flushed = false

  const close = (kind: string, w: Window) => {
    open.delete(kind)
    if (w.timer) clearTimeout(w.timer)
    if (w.repeats === 0) return
    log[w.level](
      { ...w.fields, repeats: w.repeats, windowMs },
      `${w.repeats} more in ${windowMs / 1000} s: ${Object.values(w.fields).join(' ')}`,
    )
  }

  /** The kind's window open at `t`: the one before it closed (its count written) when it has ended. */
  const windowAt = (kind: string, t: number, level: RepeatLevel, fields: Window['fields']): Window => {
    const w = open.get(kind)
    if (w && t < w.ends) return w
    if (w) close(kind, w)
    const fresh: Window = {
      level,
      fields,
      written: new Set(),
      ends: t + windowMs,
      repeats: 0,
      timer: undefined,
    }
    open.set(kind, fresh)
    return fresh
  }

  return {
    log(level, fields, variant, detail, msg) {
      if (!log.isLevelEnabled(level)) return
      if (flushed || log.isLevelEnabled('debug')) return void log[level]({ ...fields, ...detail }, msg)
      const kind = Object.values(fields).join('\n')
      const t = now()
      const w = windowAt(kind, t, level, fields)
      if (!w.written.has(variant) && w.written.size < VARIANTS_PER_WINDOW) {
        w.written.add(variant)
        return void log[level]({ ...fields, ...detail }, msg)
      }
      w.repeats++
      // The count is written when the window closes, even if nothing like it comes again.
      w.timer ??= setTimeout(() => close(kind, w), w.ends - t).unref()
    },
    flush() {
      flushed = true
      for (const [kind, w] of open) close(kind, w)
    },
  }
}
