import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import forge from 'node-forge'
import { monotonicMs } from '../shared/clock.js'
import { collectFor, idleCollection } from '../shared/loop-delay.js'
import { Registry } from '../shared/prom.js'
import { registerX509Metrics } from '../workers/certificate/x509-metrics.js'
import { startZtsDouble } from './doubles/zts.js'

const zts = await startZtsDouble()
after(() => zts.close())

/** The serial_number label of each x509_cert_not_after series, in order. */
const serialsIn = async (registry: Registry) =>
  (await registry.getMetricsAsJSON())
    .find((m) => m.name === 'x509_cert_not_after')!
    .values.map((v) => v.labels.serial_number)

/** A certificate's serial as the x509-certificate-exporter labels it: decimal. */
const decimalSerial = (pem: string) => BigInt(`0x${new X509Certificate(pem).serialNumber}`).toString()

test('serial_number is decimal, as the x509-certificate-exporter labels it (Go’s big.Int String()), not hex', async () => {
  const keys = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.publicKeyFromPem(
    keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  )
  cert.serialNumber = '7fedcba9876543210fedcba987654321'
  cert.validity.notBefore = new Date(Date.now() - 60_000)
  cert.validity.notAfter = new Date(Date.now() + 3_600_000)
  cert.setSubject([{ name: 'commonName', value: 'serial.test' }])
  cert.setIssuer(cert.subject.attributes)
  cert.sign(
    forge.pki.privateKeyFromPem(keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()),
    forge.md.sha256.create(),
  )
  const file = join(mkdtempSync(join(tmpdir(), 'sia-x509-')), 'cert.pem')
  writeFileSync(file, forge.pki.certificateToPem(cert))
  const registry = new Registry()
  registerX509Metrics(registry, () => [file], idleCollection())
  assert.deepEqual(await serialsIn(registry), ['170046660580768971048621704818733695777'])
})

test('a wall clock stepped back does not freeze the certificate series: a replaced file is read at the next scrape', async (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'sia-x509-')), 'cert.pem')
  const [first, second] = [await zts.issue('a.one'), await zts.issue('a.two')]
  writeFileSync(file, first.certPem)
  const registry = new Registry()
  registerX509Metrics(registry, () => [file], idleCollection())
  assert.deepEqual(await serialsIn(registry), [decimalSerial(first.certPem)])
  const now = Date.now()
  t.mock.method(Date, 'now', () => now - 3_600_000) // an hour back
  writeFileSync(file, second.certPem)
  await sleep(600) // past the snapshot's 500 ms
  assert.deepEqual(await serialsIn(registry), [decimalSerial(second.certPem)])
})

/** This process's threads blocked opening a FIFO (a read of one that nobody writes), from /proc. */
const fifoOpensWaiting = () =>
  readdirSync('/proc/self/task').filter(
    (t) => readFileSync(`/proc/self/task/${t}/wchan`, 'utf8').trim() === 'wait_for_partner',
  ).length

test('a file whose read hangs (a FIFO): each collection answers by its deadline without it (x509_cert_error 1) and with the other files; one read of it waits, whatever the number of collections', {
  timeout: 10_000,
}, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-x509-'))
  const [good, hung] = [join(dir, 'cert.pem'), join(dir, 'ca.pem')]
  const issued = await zts.issue('a.good')
  writeFileSync(good, issued.certPem)
  execFileSync('mkfifo', [hung])
  // The read left waiting gets an end (an empty file: no certificate).
  t.after(() => writeFileSync(hung, ''))
  const registry = new Registry()
  const collection = idleCollection()
  registerX509Metrics(registry, () => [good, hung], collection)
  const collect = collectFor(registry, collection)
  for (let i = 0; i < 3; i++) {
    const t0 = monotonicMs()
    const metrics = await collect(false, t0 + 200)
    const ms = monotonicMs() - t0
    assert.ok(ms < 200, `answered in ${ms.toFixed(0)} ms, by the deadline`)
    const values = (name: string) => metrics.find((m) => m.name === name)!.values
    assert.deepEqual(
      values('x509_cert_error').map((v) => [v.labels.filename, v.value]),
      [['ca.pem', 1]],
    )
    assert.equal(values('x509_read_errors')[0]?.value, 1)
    assert.deepEqual(
      values('x509_cert_not_after').map((v) => v.labels.serial_number),
      [decimalSerial(issued.certPem)],
    )
    await sleep(600) // past the 500 ms a file's read is reported for
  }
  if (existsSync('/proc/self/task')) assert.equal(fifoOpensWaiting(), 1, 'one read of the FIFO waits')
})
