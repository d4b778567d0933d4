import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { parsePromText, type Sample } from './support/prom-text.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

const find = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))

describe('SIA metrics: build info, pod labels, x509 valid-since and errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-metrics-'))
  const second = join(dir, 'copy', 'cert.pem')
  let sc: Sidecar
  const scrape = async () => parsePromText(await (await fetch(`${await sc.url('metrics')}/metrics`)).text())

  before(async () => {
    sc = await startReady({
      dataDir: dir,
      env: {
        NAMESPACE: 'payments',
        POD_NAME: 'api-7d9f-xk2',
        TARGET_DOMAIN_ROLES: 'demo:role.reader',
        CERT_FILE: `${join(dir, 'cert.pem')},${second}`,
      },
    })
  })
  after(async () => {
    if (sc) assert.equal(await stop(sc), 0)
  })

  it('sidecar_build_info{app_name,version,built} is 1', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string
    }
    const [info, ...more] = find(await scrape(), 'sidecar_build_info')
    assert.equal(more.length, 0)
    assert.equal(info?.value, 1)
    assert.equal(info?.labels.app_name, 'sia-supervisor')
    assert.equal(info?.labels.version, pkg.version)
    assert.ok(!Number.isNaN(Date.parse(info?.labels.built ?? '')), `built: ${info?.labels.built}`)
  })

  it('token metrics carry k8s_namespace and k8s_pod from NAMESPACE and POD_NAME', async () => {
    const samples = await scrape()
    const pod = { k8s_namespace: 'payments', k8s_pod: 'api-7d9f-xk2' }
    for (const name of ['cached_token_bytes', 'cached_token_entries']) {
      for (const type of ['roletoken', 'accesstoken']) {
        assert.equal(find(samples, name, { type, ...pod }).length, 1, `${name} ${type}`)
      }
    }
    const exp = find(samples, 'token_expires_in_seconds', { domain: 'demo', role: 'reader', ...pod })
    assert.equal(exp.length, 2)
    assert.ok(exp.every((s) => s.value > 0))
  })

  it('x509_cert_valid_since_seconds is the age of each certificate', async () => {
    const cert = new X509Certificate(readFileSync(join(dir, 'cert.pem')))
    const age = (Date.now() - Date.parse(cert.validFrom)) / 1000
    const [s] = find(await scrape(), 'x509_cert_valid_since_seconds', {
      filepath: join(dir, 'cert.pem'),
      subject_CN: 'payments.workload', // NAMESPACE is the Athenz domain,
    })
    assert.ok(s && Math.abs(s.value - age) < 5, `valid since ${s?.value}, expected about ${age}`)
  })

  it('x509_cert_error is 1 for a certificate file that cannot be parsed, only for that file', async () => {
    let samples = await scrape()
    assert.deepEqual(find(samples, 'x509_cert_error'), [])
    assert.equal(find(samples, 'x509_read_errors')[0]?.value, 0)
    writeFileSync(second, 'not a certificate')
    await new Promise((r) => setTimeout(r, 600)) // the scrape snapshot lives 500ms
    samples = await scrape()
    assert.deepEqual(
      find(samples, 'x509_cert_error').map((s) => [s.labels.filepath, s.labels.filename, s.value]),
      [[second, 'cert.pem', 1]],
    )
    assert.equal(find(samples, 'x509_read_errors')[0]?.value, 1)
    assert.equal(find(samples, 'x509_cert_not_after', { filepath: join(dir, 'cert.pem') }).length, 1)
  })
})
