import { BroadcastChannel, isMainThread } from 'node:worker_threads'
import { type DestinationStream, type Logger, pino } from 'pino'
import { monotonicMs } from './clock.js'
import { createLogFileWriter, type LogFileWriter } from './log-file.js'
import { redactRecord } from './log-redact.js'
import { SERVICES } from './services.js'
import { createStdoutSink, waitForStdoutUntil } from './stdout-sink.js'

export type { Logger }

/**
 * Workers forward their lines to the main thread's file writer (LOG_DIR) over a channel of their
 * service's own, which only the main thread reads: no worker receives another's lines.
 */
const logChannel = (service: string) => `sia-supervisor.log-lines.${service}`

let fileWriter: LogFileWriter | undefined

/**
 * The process's one LOG_DIR writer, on the main thread: its own lines and every worker's. Created
 * once (a second logger on the main thread shares it); at exit, settled (`lastLines`), then
 * flushed synchronously.
 */
function mainThreadFile(dir: string, level: string): (line: string) => void {
  if (!fileWriter) {
    const writer = createLogFileWriter(dir, level)
    fileWriter = writer
    for (const service of SERVICES) {
      const channel = new BroadcastChannel(logChannel(service))
      channel.unref()
      channel.onmessage = (e) => writer.write((e as { data: string }).data)
    }
    process.once('exit', () => writer.flushSync())
  }
  const writer = fileWriter
  return (line) => writer.write(line)
}

/** The most of the exit's time the LOG_DIR file's writes under way get to finish. */
const LAST_FILE_MS = 500
/** The most a stalled stdout is waited for by the process's last lines. */
const LAST_STDOUT_MS = 1000

/**
 * Before the process's last records (`supervisor.exit`), on the main thread, with `by` the instant
 * (monotonic ms) the process must be out by: the LOG_DIR file's writes under way get half of what
 * is left, at most LAST_FILE_MS, to finish (the last records are then written to it at exit,
 * synchronously, unless one is still under way: log-file.ts), and the records from now on wait for
 * a stalled stdout until `by`, at most LAST_STDOUT_MS (stdout-sink.ts). False if a write is still
 * under way: the exit must not wait for libuv's pool (exit.ts).
 */
export async function lastLines(by: number): Promise<boolean> {
  const settled = fileWriter
    ? await fileWriter.settle(Math.max(0, Math.min(LAST_FILE_MS, (by - monotonicMs()) / 2)))
    : true
  waitForStdoutUntil(Math.min(by, monotonicMs() + LAST_STDOUT_MS))
  return settled
}

function workerForwarder(service: string): (line: string) => void {
  const channel = new BroadcastChannel(logChannel(service))
  channel.unref()
  // While a replacement overlaps its predecessor, each hears the other's lines: drop them.
  channel.onmessage = () => {}
  return (line) => channel.postMessage(line)
}

/**
 * JSON lines on stdout with `time`, `level`, `service` and `msg`. The destination is synchronous
 * (a write(2) per record), so a record logged just before `worker.terminate()` or an exit is
 * never lost, and lines from different threads never interleave mid-record (the threads share
 * stdout's state, `stdout`: a worker's is the main thread's, from its WorkerInit); a stdout that
 * cannot take them costs lines, not a thread (stdout-sink.ts). With `logDir` (LOG_DIR), each line
 * also goes to the main thread's file writer; stdout stays the primary.
 */
export function createLogger(
  service: string,
  level: string,
  opts: { logDir?: string; stdout?: SharedArrayBuffer } = {},
): Logger {
  const toStdout = createStdoutSink({ service, state: opts.stdout })
  let dest: DestinationStream = { write: toStdout }
  if (opts.logDir) {
    const toFile = isMainThread ? mainThreadFile(opts.logDir, level) : workerForwarder(service)
    dest = {
      write(line: string) {
        toStdout(line)
        toFile(line)
      },
    }
  }
  return pino(
    {
      level,
      // `service` comes from a mixin rather than `base`, so a supervisor record about a service
      // (service.start.begin, service: 'token') carries one `service` key, not two.
      base: null,
      mixin: (record: object) => ('service' in record ? {} : { service }),
      messageKey: 'msg',
      timestamp: pino.stdTimeFunctions.isoTime,
      // Every record goes through redactRecord before it is written: no secret reaches a line.
      formatters: { level: (label) => ({ level: label }), log: redactRecord },
    },
    dest,
  )
}
