import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { distUrl } from '../shared/dist-url.js'

test('a file loaded by path is found from dist/, whether the caller is its own file or inlined in a bundle', () => {
  assert.equal(
    distUrl('shared/identity/csr.js', 'file:///app/dist/workers/token/main.js').href,
    'file:///app/dist/shared/identity/csr.js',
  )
  assert.equal(
    distUrl('shared/identity/csr-task.js', 'file:///app/dist/shared/identity/csr-pool.js').href,
    'file:///app/dist/shared/identity/csr-task.js',
  )
  assert.throws(() => distUrl('x.js', 'file:///app/src/x.js'), /not running from a dist\/ folder/)
  for (const path of ['shared/identity/csr.js', 'shared/identity/csr-task.js']) {
    assert.ok(existsSync(fileURLToPath(distUrl(path))), `${path} is built`)
  }
})

test('node-forge is in the CSR task only: the threads that rarely sign do not parse it at every boot', () => {
  const bundle = (path: string) => readFileSync(fileURLToPath(distUrl(path)), 'utf8')
  // A name only forge's source has (its PKCS#10 certification request).
  const forge = /certificationRequestFromAsn1/
  assert.match(bundle('shared/identity/csr-task.js'), forge)
  for (const entry of ['supervisor/main.js', 'workers/certificate/main.cjs', 'workers/token/main.cjs']) {
    assert.doesNotMatch(bundle(entry), forge, entry)
  }
})

test("init mode's code is not in the supervisor's bundle: a run never parses it, nor loads node:crypto for it", () => {
  const main = readFileSync(fileURLToPath(distUrl('supervisor/main.js')), 'utf8')
  // Names the bundle keeps: init mode's entry and a function of the identity code it alone uses there.
  for (const name of [/function runInit\(/, /function issueRoleToken\(/, /from\s*"node:crypto"/])
    assert.ok(!name.test(main), `${name} in supervisor/main.js`)
  assert.match(
    readFileSync(fileURLToPath(distUrl('shared/identity/init-mode.js')), 'utf8'),
    /function runInit\(/,
  )
})

test('node:http and node:net are loaded by the threads that serve, not by the certificate and memory-reporter threads', () => {
  const bundle = (path: string) => readFileSync(fileURLToPath(distUrl(path)), 'utf8')
  const http = /(require|getBuiltinModule)\("(node:)?http"\)/
  // The drain takes net where it runs, on a server: only a require at the top would load it.
  const net = /require\("(node:)?net"\)/
  for (const entry of ['workers/certificate/main.cjs', 'workers/memory-reporter/main.cjs']) {
    assert.doesNotMatch(bundle(entry), http, entry)
    assert.doesNotMatch(bundle(entry), net, entry)
  }
  for (const entry of ['workers/token/main.cjs', 'workers/gateway/main.cjs', 'workers/healthcheck/main.cjs'])
    assert.match(bundle(entry), http, entry)
})

test("ioredis is in the gateway's Redis client bundle only, which the gateway requires when Redis is configured", () => {
  const bundle = (path: string) => readFileSync(fileURLToPath(distUrl(path)), 'utf8')
  const ioredis = /node_modules\/ioredis\//
  assert.match(bundle('workers/gateway/redis-client.cjs'), ioredis)
  assert.match(bundle('workers/gateway/redis-client.cjs'), /function createRedisClient\(/)
  for (const entry of ['workers/gateway/main.cjs', 'workers/token/main.cjs', 'supervisor/main.js'])
    assert.doesNotMatch(bundle(entry), ioredis, entry)
  // Nor does a worker load node:module (with its source-map support) at boot to require it.
  const services = ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck']
  for (const s of services)
    assert.doesNotMatch(bundle(`workers/${s}/main.cjs`), /require\("(node:)?module"\)/, s)
})

test('no thread loads node:fs/promises: its FileHandle brings readline, file streams and watchers (~0.7 MiB a thread)', () => {
  const bundle = (path: string) => readFileSync(fileURLToPath(distUrl(path)), 'utf8')
  // An ES module import of node:fs reads fs.promises too (the facade reads every export).
  const fsPromises =
    /(require|getBuiltinModule)\("(node:)?fs\/promises"\)|from\s*"(node:)?fs(\/promises)?"|\.promises\b/
  const services = ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck']
  for (const entry of [
    'supervisor/cli.js',
    'supervisor/main.js',
    ...services.map((s) => `workers/${s}/main.cjs`),
  ])
    assert.doesNotMatch(bundle(entry), fsPromises, entry)
  // The pattern finds what it is meant to find.
  assert.match('import{readFile}from"node:fs/promises"', fsPromises)
  assert.match('const x=require("fs/promises")', fsPromises)
})

test("pino's transport support, its redactor and node:assert are not in the threads' bundles: no thread loads thread-stream", () => {
  const bundle = (path: string) => readFileSync(fileURLToPath(distUrl(path)), 'utf8')
  const services = ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck']
  for (const entry of ['supervisor/main.js', ...services.map((s) => `workers/${s}/main.cjs`)]) {
    const code = bundle(entry)
    assert.match(code, /function SonicBoom\(/, entry) // the destination is there…
    assert.match(code, /pino transports are not part of this build/, entry) // …transport() is the stub…
    assert.doesNotMatch(code, /ThreadStream|require\("(node:)?assert"\)/, entry) // …and neither is loaded
    // The logger redacts its records itself (shared/log-redact.ts): pino's redactor is a stub.
    assert.match(code, /pino's redact option is not part of this build/, entry)
    assert.doesNotMatch(code, /function redactPaths\(/, entry)
  }
})
