import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { SECRET_ENV } from '../shared/config/secret-env.js'
import { envName, SETTINGS, type SettingKey, type SettingSpec } from '../shared/config/settings.js'
import { unslicedSecrets } from '../shared/config/slice.js'
import { AWAIT_INIT } from '../shared/protocol.js'
import { FIXTURE, post } from './support/gateway.js'
import { CLI, startReady, stop } from './support/sidecar.js'

/** DESIGN.md §8: each worker receives only what it may hold; secrets can come from files. */

test('every secret setting is confined to the workers that use it, and kept out of their environment', () => {
  assert.deepEqual(unslicedSecrets(), [])
  const secretEnv = Object.keys(SETTINGS)
    .filter((k) => (SETTINGS[k as SettingKey] as SettingSpec).secret)
    .flatMap((k) => [envName(k as SettingKey), `${envName(k as SettingKey)}_FILE`])
  assert.deepEqual([...SECRET_ENV].sort(), secretEnv.sort())
})

test("no worker's init (workerData, or its first message) holds another service's secret", async () => {
  // A preload in every thread writes the configuration its worker was given.
  const dir = mkdtempSync(join(tmpdir(), 'sia-slice-'))
  const dump = join(dir, 'dump.mjs')
  writeFileSync(
    dump,
    `import { parentPort, workerData } from 'node:worker_threads'
import { writeFileSync } from 'node:fs'
const write = (init) => {
  writeFileSync(${JSON.stringify(dir)} + '/' + init.service + '.json', JSON.stringify(init.config))
  writeFileSync(${JSON.stringify(dir)} + '/' + init.service + '.env', JSON.stringify(process.env))
}
if (workerData?.service) write(workerData)
// A thread started before the configuration was read gets it as its first message.
if (workerData === ${JSON.stringify(AWAIT_INIT)}) parentPort.once('message', write)
`,
  )
  const secrets = {
    GATEWAY_AUTH_TOKEN: 'gw-token-7f3a9c',
    REDIS_SENTINEL_PASSWORD: 'sentinel-pw-51e2',
  }
  const keyFile = join(dir, 'very-private-key.pem')
  const keyCopy = join(dir, 'second-private-key.pem') // a comma-separated KEY_FILE: every path confined
  const sc = await startReady({
    env: { ...secrets, KEY_FILE: `${keyFile},${keyCopy}`, NODE_OPTIONS: `--import=${dump}` },
  })
  assert.equal(await stop(sc), 0)
  const seen = Object.fromEntries(
    readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => [f.replace(/\.json$/, ''), readFileSync(join(dir, f), 'utf8')]),
  )
  assert.deepEqual(Object.keys(seen).sort(), [
    'certificate',
    'gateway',
    'healthcheck',
    'memory-reporter',
    'metrics',
    'token',
  ])
  for (const [service, text] of Object.entries(seen)) {
    for (const value of Object.values(secrets)) {
      assert.equal(text.includes(value), service === 'gateway', `${service} and ${value}`)
    }
    // Nor in its environment: a worker reads its configuration from the supervisor alone.
    const env = readFileSync(join(dir, `${service}.env`), 'utf8')
    for (const value of Object.values(secrets))
      assert.ok(!env.includes(value), `${service}'s env and ${value}`)
    assert.ok(env.includes('NODE_OPTIONS'), `${service}'s env is the process's, less the secrets`)
    for (const k of [keyFile, keyCopy]) {
      assert.equal(text.includes(k), service === 'certificate' || service === 'token', `${service} and ${k}`)
    }
  }
})

test('a secret from <SETTING>_FILE is used; a secret given as a flag is warned about, never logged', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-secret-'))
  const tokenFile = join(dir, 'token')
  writeFileSync(tokenFile, 'from-a-file-8d1\n') // as Kubernetes mounts it, with a final newline
  const sc = await startReady({
    env: { GATEWAY_AUTH_TOKEN_FILE: tokenFile },
    args: ['--redis-sentinel-password', 'flag-secret-22b'],
  })
  const gateway = await sc.url('gateway')
  assert.equal((await post(gateway, FIXTURE)).status, 401)
  const ok = await post(gateway, FIXTURE, { authorization: 'Bearer from-a-file-8d1' })
  assert.ok(ok.status === 201 || ok.status === 202, String(ok.status))
  const warning = await sc.waitForEvent('config.warning')
  assert.equal(warning.setting, '--redis-sentinel-password')
  assert.match(warning.reason as string, /visible to every user in ps; use REDIS_SENTINEL_PASSWORD_FILE/)
  assert.equal(await stop(sc), 0)
  const all = sc.records.map((r) => JSON.stringify(r)).join('\n')
  assert.ok(!all.includes('flag-secret-22b') && !all.includes('from-a-file-8d1'), 'no secret in the logs')
})

test('<SETTING> and <SETTING>_FILE together, or an unreadable file: exit 2 naming it', () => {
  const run = (env: Record<string, string>) =>
    spawnSync(process.execPath, [CLI], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8' })
  const both = run({ GATEWAY_AUTH_TOKEN: 'a', GATEWAY_AUTH_TOKEN_FILE: '/etc/hostname' })
  assert.equal(both.status, 2)
  assert.match(
    both.stderr,
    /invalid setting GATEWAY_AUTH_TOKEN_FILE: set either GATEWAY_AUTH_TOKEN or GATEWAY_AUTH_TOKEN_FILE/,
  )
  const missing = run({ REDIS_URL_FILE: '/nonexistent/redis-url' })
  assert.equal(missing.status, 2)
  assert.match(missing.stderr, /invalid setting REDIS_URL_FILE: cannot read \/nonexistent\/redis-url: ENOENT/)
})
