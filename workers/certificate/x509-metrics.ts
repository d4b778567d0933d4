import { X509Certificate } from 'node:crypto'
import { basename } from 'node:path'
import { monotonicMs } from '../../shared/clock.js'
import { readFile } from '../../shared/fs-async.js'
import type { Collection } from '../../shared/loop-delay.js'
import { Gauge, type Registry } from '../../shared/prom.js'
import { createSingleFlight } from '../../shared/single-flight.js'

/**
 * The x509-certificate-exporter's series for our files, read at scrape time: one series per
 * certificate in each file (a bundle holds several), labelled as the exporter labels them.
 */
const NAME_PARTS = ['C', 'ST', 'L', 'O', 'OU', 'CN'] as const
const LABELS = [
  'filepath',
  'filename',
  'serial_number',
  ...NAME_PARTS.map((p) => `subject_${p}`),
  ...NAME_PARTS.map((p) => `issuer_${p}`),
]

const PEM = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g

function nameLabels(prefix: string, dn: string): Record<string, string> {
  const parts = new Map(dn.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  return Object.fromEntries(NAME_PARTS.map((p) => [`${prefix}_${p}`, parts.get(p) ?? '']))
}

interface Row {
  labels: Record<string, string>
  notAfter: number
  notBefore: number
}

interface Snapshot {
  rows: Row[]
  errors: number
  /** The files that could not be read or parsed, for x509_cert_error. */
  failed: string[]
}

/** A file's certificates, or undefined if it could not be read or parsed. */
async function readRows(filepath: string): Promise<Row[] | undefined> {
  try {
    const pems = (await readFile(filepath, 'utf8')).match(PEM)
    if (!pems) return undefined
    return pems.map((pem) => {
      const cert = new X509Certificate(pem)
      return {
        labels: {
          filepath,
          filename: basename(filepath),
          // Decimal, as the exporter's (Go's big.Int String()); Node gives it in hex.
          serial_number: BigInt(`0x${cert.serialNumber}`).toString(),
          ...nameLabels('subject', cert.subject),
          ...nameLabels('issuer', cert.issuer),
        },
        notAfter: Date.parse(cert.validTo) / 1000,
        notBefore: Date.parse(cert.validFrom) / 1000,
      }
    })
  } catch {
    return undefined
  }
}

/** A file is read at most once in this long: scrapes close together report the same read. */
const FRESH_MS = 500
/**
 * Kept back from a scrape's deadline for the rest of the answer (the other series, the message to
 * the metrics service): at most a quarter of the time the scrape gives.
 */
const ANSWER_MARGIN_MS = 50

/**
 * One file's reads, and what the last one gave. A read under way is joined, never doubled: a file
 * whose read hangs (a frozen volume, a FIFO) holds a thread of libuv's pool, which every worker of
 * the process shares, and a read a scrape had used up the pool in four scrapes, and with it the
 * gateway's sink and every file the sidecar writes. Each asker stops waiting at its own deadline
 * and leaves nothing behind (shared/single-flight.ts): a scrape that awaited the hung read kept
 * its whole collection (4.5 to 10 KiB a scrape) until the thread was recycled.
 */
function fileReader(filepath: string): (until: number) => Promise<Row[] | undefined> {
  let last: { at: number; rows: Row[] | undefined } | undefined
  const flight = createSingleFlight(async () => {
    const at = monotonicMs()
    const rows = await readRows(filepath)
    last = { at, rows }
    return rows
  })
  // Its age on the monotonic clock: after the wall clock stepped back an hour, the files were
  // not read again for an hour (a replaced certificate's expiry went on being reported).
  return (until) =>
    last && monotonicMs() - last.at <= FRESH_MS ? Promise.resolve(last.rows) : flight.join(until)
}

/**
 * `collection`: the collection under way, whose deadline a read that has not ended by then is
 * reported at (as a file that could not be read, x509_cert_error 1), so that the rest still answers.
 */
export function registerX509Metrics(
  registry: Registry,
  files: () => string[],
  collection: Readonly<Collection>,
): void {
  const readers = new Map<string, (until: number) => Promise<Row[] | undefined>>()
  const readAll = async (until: number): Promise<Snapshot> => {
    const list = files()
    const read = await Promise.all(
      list.map((filepath) => {
        let reader = readers.get(filepath)
        if (!reader) {
          reader = fileReader(filepath)
          readers.set(filepath, reader)
        }
        return reader(until)
      }),
    )
    const failed = list.filter((_, i) => read[i] === undefined)
    return { rows: read.flatMap((rows) => rows ?? []), errors: failed.length, failed }
  }
  // Every series of one collection comes from one snapshot: prom-client calls each gauge's
  // collect() in the turn the collection begins, and the snapshot is theirs for that turn.
  let current: Promise<Snapshot> | undefined
  const snapshot = () => {
    if (!current) {
      const { answerBy } = collection
      current = readAll(answerBy - Math.min(ANSWER_MARGIN_MS, Math.max(0, answerBy - monotonicMs()) / 4))
      queueMicrotask(() => {
        current = undefined
      })
    }
    return current
  }
  const gauge = (name: string, help: string, value: (r: Row, nowSec: number) => number) =>
    new Gauge({
      name,
      help,
      labelNames: LABELS,
      registers: [registry],
      async collect() {
        const { rows } = await snapshot()
        this.reset()
        const now = Date.now() / 1000
        for (const r of rows) this.set(r.labels, value(r, now))
      },
    })
  gauge('x509_cert_not_after', 'Certificate expiry, epoch seconds', (r) => r.notAfter)
  gauge('x509_cert_not_before', 'Certificate start of validity, epoch seconds', (r) => r.notBefore)
  gauge('x509_cert_expired', '1 if the certificate has expired', (r, now) => (r.notAfter <= now ? 1 : 0))
  gauge('x509_cert_expires_in_seconds', 'Seconds until the certificate expires', (r, now) =>
    Math.round(r.notAfter - now),
  )
  gauge('x509_cert_valid_since_seconds', 'Seconds since the certificate became valid', (r, now) =>
    Math.round(now - r.notBefore),
  )
  new Gauge({
    name: 'x509_cert_error',
    help: '1 for a certificate file that could not be read or parsed at this scrape',
    labelNames: ['filepath', 'filename'],
    registers: [registry],
    async collect() {
      const { failed } = await snapshot()
      this.reset()
      for (const filepath of failed) this.set({ filepath, filename: basename(filepath) }, 1)
    },
  })
  new Gauge({
    name: 'x509_read_errors',
    help: 'Certificate files that could not be read or parsed at this scrape',
    registers: [registry],
    async collect() {
      this.set((await snapshot()).errors)
    },
  })
}
