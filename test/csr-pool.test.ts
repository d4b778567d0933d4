import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { createRequire } from 'node:module'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { CSR_POOL_LIMITS } from '../shared/config/limits.js'
import { CSR_THREAD_IDLE_MS, createCsrPool, csrPoolOptions } from '../shared/identity/csr-pool.js'
import { generateRsaKey } from '../shared/identity/local-authority.js'

test('the CSR pool self-signs a CA, and refuses work once closed instead of starting a new pool', async () => {
  const pool = createCsrPool()
  const { privateKeyPem } = await generateRsaKey()
  const now = Date.now()
  const pem = await pool.ca({
    keyPem: privateKeyPem,
    commonName: 'test authority',
    organization: 'test',
    notBefore: now - 60_000,
    notAfter: now + 3600_000,
  })
  // piscina came from its own bundle under dist/, one file, not from its 15 modules in node_modules.
  const loaded = Object.keys(createRequire(import.meta.url).cache)
  assert.ok(
    loaded.some((f) => f.endsWith('/dist/shared/identity/piscina/index.cjs')),
    loaded.join('\n'),
  )
  assert.deepEqual(
    loaded.filter((f) => f.includes('/node_modules/piscina/')),
    [],
  )
  const cert = new X509Certificate(pem)
  assert.equal(cert.ca, true)
  assert.equal(cert.subject, cert.issuer)
  assert.match(cert.subject, /CN=test authority/)
  assert.ok(cert.checkIssued(cert) && cert.verify(cert.publicKey), 'self-signed')
  await pool.close()
  await assert.rejects(
    pool.csr({ keyPem: privateKeyPem, commonName: 'x', dnsNames: [], uris: [], ips: [] }),
    {
      code: 'ERR_CSR_POOL_CLOSED',
    },
  )
})

test('a CSR pool never used closes without starting one', async () => {
  const pool = createCsrPool()
  await pool.close()
  await assert.rejects(
    pool.ca({ keyPem: '', commonName: 'x', organization: 'x', notBefore: 0, notAfter: 1 }),
    {
      code: 'ERR_CSR_POOL_CLOSED',
    },
  )
})

test('a CSR asked just before close() is refused, not run on a thread started after close() (the pool idle, its threads ended)', async () => {
  const pool = createCsrPool()
  const { privateKeyPem } = await generateRsaKey()
  const spec = { keyPem: privateKeyPem, commonName: 'x', dnsNames: [], uris: [], ips: [] }
  await pool.csr(spec)
  await sleep(CSR_THREAD_IDLE_MS + 500)
  const late = pool.csr(spec)
  await pool.close()
  await assert.rejects(late, { code: 'ERR_CSR_POOL_CLOSED' })
})

test("the CSR pool's threads run with heap limits of their own: one that leaks ends its task, and the next task gets a new thread", async () => {
  // The product's piscina bundle: the first test holds this process to it.
  const { Piscina } = createRequire(import.meta.url)(
    '../shared/identity/piscina/index.cjs',
  ) as typeof import('piscina')
  const pool = new Piscina({
    ...csrPoolOptions(),
    filename: new URL('./support/heap-hog-task.js', import.meta.url).href,
  })
  try {
    const limits = (await pool.run('limits')) as typeof CSR_POOL_LIMITS
    assert.equal(limits.maxOldGenerationSizeMb, CSR_POOL_LIMITS.maxOldGenerationSizeMb)
    assert.equal(limits.maxYoungGenerationSizeMb, CSR_POOL_LIMITS.maxYoungGenerationSizeMb)
    await assert.rejects(pool.run('hog'), { code: 'ERR_WORKER_OUT_OF_MEMORY' })
    assert.equal(
      ((await pool.run('limits')) as typeof CSR_POOL_LIMITS).maxOldGenerationSizeMb,
      CSR_POOL_LIMITS.maxOldGenerationSizeMb,
    )
  } finally {
    await pool.destroy()
  }
})
