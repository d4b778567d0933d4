import { type Logger, pino } from 'pino'

export type { Logger }

/** Paths that may hold a secret; pino replaces them before the record is written. */
const REDACT = [
  'token',
  'accessToken',
  'access_token',
  'authorization',
  'password',
  'privateKey',
  '*.token',
  '*.access_token',
  '*.authorization',
  '*.password',
  '*.privateKey',
  'req.headers.authorization',
]

/**
 * JSON lines on stdout with `time`, `level`, `service` and `msg`. The destination is synchronous
 * (a write(2) per record), so a record logged just before `worker.terminate()` or `process.exit()`
 * is never lost, and lines from different threads never interleave mid-record.
 */
export function createLogger(service: string, level: string): Logger {
  return pino(
    {
      level,
      // `service` comes from a mixin rather than `base`, so a supervisor record about a service
      // (service.start.begin, service: 'token') carries one `service` key, not two.
      base: null,
      mixin: (record: object) => ('service' in record ? {} : { service }),
      messageKey: 'msg',
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT, censor: '[redacted]' },
    },
    pino.destination({ fd: 1, sync: true }),
  )
}
