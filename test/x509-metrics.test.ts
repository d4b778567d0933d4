import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Registry } from '../shared/prom.js'
import { registerX509Metrics } from '../workers/certificate/x509-metrics.js'
import { startZtsDouble } from './doubles/zts.js'

const zts = await startZtsDouble()
after(() => zts.close())

test('a wall clock stepped back does not freeze the certificate series: a replaced file is read at the next scrape', async (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'sia-x509-')), 'cert.pem')
  const [first, second] = [await zts.issue('a.one'), await zts.issue('a.two')]
  writeFileSync(file, first.certPem)
  const registry = new Registry()
  registerX509Metrics(registry, () => [file])
  const serials = async () =>
    (await registry.getMetricsAsJSON())
      .find((m) => m.name === 'x509_cert_not_after')!
      .values.map((v) => v.labels.serial_number)
  assert.deepEqual(await serials(), [new X509Certificate(first.certPem).serialNumber])
  const now = Date.now()
  t.mock.method(Date, 'now', () => now - 3_600_000) // an hour back
  writeFileSync(file, second.certPem)
  await sleep(600) // past the snapshot's 500 ms
  assert.deepEqual(await serials(), [new X509Certificate(second.certPem).serialNumber])
})
