import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, renameSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { alert, SIGNALS, webhook } from './support/gateway.js'
import { freePort } from './support/ports.js'
import { CLI, type Sidecar, startReady, stop } from './support/sidecar.js'

/**
 * The config file and `<SETTING>_FILE` secrets as the built CLI reads them, at boot and on SIGHUP:
 * what YAML does with a value starting with one of its indicators, and files that are not small
 * regular files (a FIFO blocked the main thread before any log, past SIGTERM).
 */

const SECRET = 'Sup3rS3cretTok'

const dir = () => mkdtempSync(join(tmpdir(), 'sia-cfgfile-'))

function fifo(path: string): string {
  const r = spawnSync('mkfifo', [path])
  assert.equal(r.status, 0, r.stderr?.toString())
  return path
}

/** A file of `bytes` that takes no disk (sparse), as `truncate -s`. */
function sparse(path: string, bytes: number): string {
  writeFileSync(path, '')
  truncateSync(path, bytes)
  return path
}

/** The built CLI on `args` and `env`, nothing else: ended at 10 s, so a hang fails on its status. */
function cli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH ?? '', DATA_DIR: dir(), ...env },
    encoding: 'utf8',
    timeout: 10_000,
    killSignal: 'SIGKILL',
  })
}

/** Exit 2 with one stderr line saying `reason`, nothing logged, the secret nowhere. */
function refused(r: ReturnType<typeof cli>, reason: RegExp, what: string): void {
  assert.equal(r.status, 2, `${what}: status ${r.status} (signal ${r.signal}); stderr: ${r.stderr}`)
  assert.equal(r.stdout, '', `${what}: nothing started, nothing logged`)
  assert.equal(
    r.stderr.trim().split('\n').length,
    1,
    `${what}: one line, nothing else on stderr: ${r.stderr}`,
  )
  assert.match(r.stderr.trim(), reason, what)
  assert.ok(!r.stderr.includes(SECRET), `${what}: the secret is not quoted: ${r.stderr}`)
}

describe('a value starting with a YAML indicator in the config file', () => {
  test('exit 2 naming the setting and where, never the value or its line, nothing else on stderr', () => {
    const d = dir()
    // `!` was an unknown tag: a warning on stderr quoting the line, and the value "" (webhook auth
    // off, dedup in memory, the gateway disabled). `*`, `|`, `>` were exit 2 quoting the value.
    for (const key of ['gatewayAuthToken', 'redisUrl', 'gatewayAddr']) {
      for (const indicator of ['!', '*', '|', '>', '&', '!!str ', '%', '@']) {
        const path = join(d, 'c.yaml')
        writeFileSync(path, `logLevel: info\n${key}: ${indicator}${SECRET}\n`)
        refused(
          cli(['--config', path]),
          new RegExp(`^sia-supervisor: invalid setting ${key} \\(in ${path}\\): line 2, column \\d+: `),
          `${key}: ${indicator}…`,
        )
      }
    }
    // JSON is read by the same parser: alike.
    const json = join(d, 'c.json')
    writeFileSync(json, `{"logLevel": "info", "gatewayAuthToken": *${SECRET}}`)
    refused(
      cli([], { SIA_CONFIG_FILE: json }),
      /^sia-supervisor: invalid setting gatewayAuthToken \(in .*\): line 1, column \d+: /,
      'JSON alias',
    )
    writeFileSync(json, `{"logLevel": "info", "gatewayAuthToken": "${SECRET}`)
    refused(
      cli([], { SIA_CONFIG_FILE: json }),
      /^sia-supervisor: invalid setting gatewayAuthToken \(in .*\): line 1, column \d+: missing char$/,
      'JSON unterminated',
    )
    // A mistake under a key that is no setting names the file's variable: the key is not quoted.
    writeFileSync(json, `{"x${SECRET}": [1`)
    refused(
      cli([], { SIA_CONFIG_FILE: json }),
      /^sia-supervisor: invalid setting SIA_CONFIG_FILE: .*c\.json is not valid JSON or YAML: line 1, column \d+: /,
      'JSON under an unknown key',
    )
    // Quoted, each is the value written.
    const quoted = join(d, 'q.yaml')
    writeFileSync(quoted, `gatewayAuthToken: '!${SECRET}'\nfoo: bar\n`)
    refused(cli(['--config', quoted]), /invalid setting foo \(in .*\): unknown setting$/, 'quoted')
  })

  test('on SIGHUP: the reload is refused naming the setting, the old token still guards the webhooks', async () => {
    const d = dir()
    const config = join(d, 'sia.yaml')
    const head = 'services: {certificate: {enabled: false}, token: {enabled: false}}\n'
    writeFileSync(config, `${head}gatewayAuthToken: ${SECRET}\n`)
    const gateway = `127.0.0.1:${await freePort()}`
    const sc = await startReady({
      args: ['--config', config],
      env: { GATEWAY_ADDR: gateway, TOKEN_SERVER_ADDR: '', METRICS_SERVER_ADDR: '' },
    })
    try {
      const post = (auth?: string) =>
        fetch(`http://${gateway}${SIGNALS}`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            ...(auth ? { authorization: `Bearer ${auth}` } : {}),
          },
          body: JSON.stringify(webhook([alert(`A${Math.random()}`)])),
          signal: AbortSignal.timeout(10_000),
        }).then((r) => r.status)
      assert.equal(await post(), 401)
      writeFileSync(config, `${head}gatewayAuthToken: !N3w${SECRET}\n`)
      sc.kill('SIGHUP')
      // It used to be taken: supervisor.reload.done, and webhooks with no token answered 201.
      const outcome = await sc.waitFor((r) => /^supervisor\.reload\.(done|failed)$/.test(r.event ?? ''))
      assert.equal(outcome.event, 'supervisor.reload.failed')
      assert.match(JSON.stringify(outcome.err), /gatewayAuthToken \(in .*\): line 2, column \d+/)
      assert.deepEqual(sc.events('worker.replacing'), [])
      assert.equal(await post(), 401, 'authentication is still on')
      assert.equal(await post(SECRET), 201, 'with the token it was given at boot')
      assert.equal(await stop(sc), 0)
      const out = JSON.stringify(sc.records) + sc.junk.join('\n')
      assert.ok(!out.includes(SECRET), 'no token in the logs')
      assert.equal(sc.stderr(), '', 'nothing printed by the YAML parser')
    } finally {
      // Still running when an assertion failed: a main thread blocked in a read ignores SIGTERM.
      sc.kill('SIGKILL')
    }
  })
})

describe('a config or secret file that is not a small regular file', () => {
  test('a FIFO, a directory, a file over 1 MiB: exit 2 at once naming the setting and why; a symlink to a file is read', () => {
    const d = dir()
    const pipe = fifo(join(d, 'pipe'))
    const big = sparse(join(d, 'big.yaml'), 2 * 1024 * 1024)
    // A FIFO: the read blocked before anything was logged, and SIGTERM did not end it.
    refused(
      cli(['--config', pipe]),
      /^sia-supervisor: invalid setting --config: .*pipe is a FIFO, not a regular file$/,
      'fifo',
    )
    refused(
      cli([], { SIA_CONFIG_FILE: pipe }),
      /invalid setting SIA_CONFIG_FILE: .*pipe is a FIFO/,
      'fifo env',
    )
    refused(
      cli([], { GATEWAY_AUTH_TOKEN_FILE: pipe }),
      /invalid setting GATEWAY_AUTH_TOKEN_FILE: .*pipe is a FIFO/,
      'fifo secret',
    )
    refused(
      cli(['--config', d]),
      /invalid setting --config: .* is a directory, not a regular file$/,
      'directory',
    )
    refused(
      cli(['--config', big]),
      /^sia-supervisor: invalid setting --config: .*big\.yaml is larger than 1 MiB/,
      'oversized',
    )
    refused(
      cli([], { REDIS_URL_FILE: big }),
      /invalid setting REDIS_URL_FILE: .*big\.yaml is larger than 1 MiB/,
      'oversized secret',
    )
    // As Kubernetes mounts a ConfigMap: a symlink to the file. It is read (here: its unknown key).
    const target = join(d, 'real.yaml')
    writeFileSync(target, 'noSuchSetting: 1\n')
    symlinkSync(target, join(d, 'link.yaml'))
    refused(
      cli(['--config', join(d, 'link.yaml')]),
      /invalid setting noSuchSetting \(in .*link\.yaml\)/,
      'symlink',
    )
  })

  test('on SIGHUP: a FIFO or an oversized file in its place refuses the reload; still serving, SIGTERM ends it', async () => {
    const d = dir()
    const config = join(d, 'sia.yaml')
    writeFileSync(config, 'services: {certificate: {enabled: false}, token: {enabled: false}}\n')
    const health = `127.0.0.1:${await freePort()}`
    let sc: Sidecar | undefined
    try {
      sc = await startReady({
        args: ['--config', config],
        env: { HEALTH_CHECK_ADDR: health, TOKEN_SERVER_ADDR: '', METRICS_SERVER_ADDR: '', GATEWAY_ADDR: '' },
      })
      renameSync(fifo(join(d, 'pipe')), config)
      sc.kill('SIGHUP')
      const fifoFailed = await sc.waitForEvent('supervisor.reload.failed')
      assert.match(JSON.stringify(fifoFailed.err), /--config: .*sia\.yaml is a FIFO, not a regular file/)
      const ready = await fetch(`http://${health}/readyz`, { signal: AbortSignal.timeout(5000) })
      assert.equal(ready.status, 200)
      renameSync(sparse(join(d, 'big'), 2 * 1024 * 1024), config)
      sc.kill('SIGHUP')
      const bigFailed = await sc.waitForCount('supervisor.reload.failed', 2)
      assert.match(JSON.stringify(bigFailed.err), /--config: .*sia\.yaml is larger than 1 MiB/)
      assert.deepEqual(sc.events('worker.replacing'), [])
      assert.equal(await stop(sc), 0)
      assert.equal(sc.events('supervisor.exit').length, 1)
    } finally {
      // Still running when an assertion failed: a main thread blocked in a read ignores SIGTERM.
      sc?.kill('SIGKILL')
    }
  })
})
