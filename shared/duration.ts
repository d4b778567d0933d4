import { codedError } from './errors.js'

// Go's time.ParseDuration units, in milliseconds.
const UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
}
const PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y

/** The longest wait a Node timer can hold (~24.8 days); a longer one would fire at once. */
export const MAX_DURATION_MS = 2 ** 31 - 1

/**
 * Parses a Go duration ("24h", "1m30s", "-1s", "250ms") to milliseconds, as `time.ParseDuration`
 * does, and refuses one that no timer can hold.
 */
export function parseDuration(text: string): number {
  const trimmed = text.trim()
  const sign = trimmed.startsWith('-') ? -1 : 1
  const s = trimmed.replace(/^[-+]/, '')
  if (s === '0') return 0
  if (s === '') throw codedError('ERR_DURATION', 'empty duration')
  let total = 0
  PART.lastIndex = 0
  while (PART.lastIndex < s.length) {
    const at = PART.lastIndex
    const m = PART.exec(s)
    if (!m || m.index !== at) {
      throw codedError('ERR_DURATION', `invalid duration "${text}" (use Go syntax such as 30s, 1m30s, 24h)`)
    }
    total += Number(m[1]) * (UNITS[m[2]!] as number)
  }
  if (Math.round(total) > MAX_DURATION_MS) {
    throw codedError(
      'ERR_DURATION',
      `"${text}" is longer than a timer can hold (at most ${formatDuration(MAX_DURATION_MS)})`,
    )
  }
  return sign * Math.round(total)
}

export function formatDuration(ms: number): string {
  if (ms === 0) return '0s'
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`
  if (ms % 60_000 === 0) return `${ms / 60_000}m`
  if (ms % 1000 === 0) return `${ms / 1000}s`
  return `${ms}ms`
}
