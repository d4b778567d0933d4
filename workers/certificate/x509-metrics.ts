import { X509Certificate } from 'node:crypto'
import { basename } from 'node:path'
import { monotonicMs } from '../../shared/clock.js'
import { readFile } from '../../shared/fs-async.js'
import { Gauge, type Registry } from '../../shared/prom.js'

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

async function readRows(files: string[]): Promise<Snapshot> {
  const rows: Row[] = []
  const failed: string[] = []
  let errors = 0
  for (const filepath of files) {
    try {
      const pems = (await readFile(filepath, 'utf8')).match(PEM)
      if (!pems) throw new Error('no certificate')
      for (const pem of pems) {
        const cert = new X509Certificate(pem)
        rows.push({
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
        })
      }
    } catch {
      errors++
      failed.push(filepath)
    }
  }
  return { rows, errors, failed }
}

/** Every series of one scrape comes from one read of the files. */
const SNAPSHOT_MS = 500

export function registerX509Metrics(registry: Registry, files: () => string[]): void {
  let snapshot: { at: number; data: Promise<Snapshot>; settled: boolean } | undefined
  const read = () => {
    // Its age on the monotonic clock: after the wall clock stepped back an hour, the files were
    // not read again for an hour (a replaced certificate's expiry went on being reported).
    // A read not yet settled is waited for, not joined by another: a file whose read hangs (a
    // frozen volume, a FIFO) holds a thread of libuv's pool, which every worker of the process
    // shares; a read a scrape had used up the pool in four scrapes, and with it the gateway's
    // sink and every file the sidecar writes. That scrape reports this worker down instead.
    if (!snapshot || (snapshot.settled && monotonicMs() - snapshot.at > SNAPSHOT_MS)) {
      const next = { at: monotonicMs(), data: readRows(files()), settled: false }
      void next.data.finally(() => {
        next.settled = true
      })
      snapshot = next
    }
    return snapshot.data
  }
  const gauge = (name: string, help: string, value: (r: Row, nowSec: number) => number) =>
    new Gauge({
      name,
      help,
      labelNames: LABELS,
      registers: [registry],
      async collect() {
        const { rows } = await read()
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
      const { failed } = await read()
      this.reset()
      for (const filepath of failed) this.set({ filepath, filename: basename(filepath) }, 1)
    },
  })
  new Gauge({
    name: 'x509_read_errors',
    help: 'Certificate files that could not be read or parsed at this scrape',
    registers: [registry],
    async collect() {
      this.set((await read()).errors)
    },
  })
}
