import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { loadConfig } from '../shared/config/load.js'
import type { Config } from '../shared/config/types.js'
import { runInit } from '../shared/identity/init-mode.js'
import { createLogger } from '../shared/logger.js'
import { providerEnv, startZtsDouble, type ZtsDouble } from './doubles/zts.js'

const log = createLogger('supervisor', 'silent')
let zts: ZtsDouble

function config(env: Record<string, string>): Config {
  const dir = mkdtempSync(join(tmpdir(), 'sia-init-'))
  const inv = loadConfig(['--mode', 'init'], { DATA_DIR: dir, TOKEN_DIR: join(dir, 'tokens'), ...env })
  assert.equal(inv.kind, 'run')
  return (inv as { config: Config }).config
}
const mode = (f: string) => statSync(f).mode & 0o777

before(async () => {
  zts = await startZtsDouble()
})
after(() => zts.close())

describe('MODE=init', () => {
  it('local: writes the certificates and token files once and resolves 0', async () => {
    const cfg = config({ TARGET_DOMAIN_ROLES: 'demo:role.reader' })
    assert.equal(await runInit(cfg, log), 0)
    assert.equal(mode(cfg.keyFile), 0o600)
    assert.equal(mode(cfg.certFile), 0o644)
    assert.equal(mode(join(cfg.roleCertDir, 'demo:role.reader.cert.pem')), 0o644)
    assert.equal(mode(join(cfg.tokenDir, 'demo:role.reader.accesstoken')), 0o600)
    assert.match(
      readFileSync(join(cfg.tokenDir, 'demo:role.reader.roletoken'), 'utf8'),
      /^v=Z1;d=demo;r=reader;/,
    )
  })

  it('zts: registers, fetches role certs and tokens over mutual TLS, resolves 0', async () => {
    const cfg = config({
      ...providerEnv(zts),
      TARGET_DOMAIN_ROLES: 'demo:role.reader',
      TOKEN_TYPE: 'accesstoken',
    })
    assert.equal(await runInit(cfg, log), 0)
    assert.equal(zts.counts.register, 1)
    assert.equal(zts.counts.rolecert, 1)
    assert.equal(zts.counts.oauth2, 1)
    assert.equal(zts.counts.roletoken, 0)
    assert.match(
      readFileSync(join(cfg.tokenDir, 'demo:role.reader.accesstoken'), 'utf8'),
      /^[\w-]+\.[\w-]+\.[\w-]+$/,
    )
  })

  it('resolves 1 when ZTS refuses, leaving no certificate behind', async () => {
    // A refusal is not retried (a 5xx is, on SIA's schedule: init-mode.test.ts).
    zts.failNext('register', 403, 1)
    const cfg = config(providerEnv(zts))
    assert.equal(await runInit(cfg, log), 1)
    assert.throws(() => statSync(cfg.certFile), { code: 'ENOENT' })
  })

  it('resolves 1 for the files provider without key and cert', async () => {
    const cfg = config({ ENDPOINT: zts.url, SERVER_CA_CERT: zts.caFile })
    assert.equal(await runInit(cfg, log), 1)
  })
})

describe('identity settings', () => {
  it('rejects a malformed TARGET_DOMAIN_ROLES and half a TLS configuration, naming the setting', () => {
    assert.throws(() => loadConfig([], { TARGET_DOMAIN_ROLES: 'demo:role.ok,nonsense' }), {
      code: 'ERR_CONFIG',
      message: /TARGET_DOMAIN_ROLES: invalid entry "nonsense"/,
    })
    assert.throws(() => loadConfig([], { TOKEN_SERVER_TLS_CERT_PATH: '/c.pem' }), {
      message: /TOKEN_SERVER_TLS_KEY_PATH/,
    })
    assert.throws(() => loadConfig([], { TOKEN_SERVER_TLS_CA_PATH: '/ca.pem' }), {
      message: /TOKEN_SERVER_TLS_CA_PATH/,
    })
  })
})
