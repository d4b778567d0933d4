import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startReady, stop } from './support/sidecar.js'

test('a reload that drops a role removes its role certificate and key file, keeps the others, and says so', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-cert-reload-'))
  const config = join(dir, 'sia.json')
  const roles = (targetDomainRoles: string[]) =>
    writeFileSync(config, JSON.stringify({ targetDomainRoles, roleCertKeyFileOutput: 'true' }))
  roles(['demo:role.a', 'demo:role.b'])
  const sc = await startReady({ dataDir: dir, args: ['--config', config], env: { GATEWAY_ADDR: '' } })
  t.after(() => stop(sc, 'SIGKILL'))
  const files = (role: string) => [join(dir, `demo:${role}.cert.pem`), join(dir, `demo:${role}.key.pem`)]
  for (const f of [...files('role.a'), ...files('role.b')]) assert.ok(existsSync(f), f)

  roles(['demo:role.a'])
  sc.kill('SIGHUP')
  const done = await sc.waitForEvent('supervisor.reload.done', {}, 30_000)
  const outcomes = done.outcomes as { service: string; outcome: string }[]
  assert.equal(outcomes.find((o) => o.service === 'certificate')?.outcome, 'replaced')
  const removed = await sc.waitForEvent('certificate.role.removed', {}, 10_000)
  assert.deepEqual(removed.files, files('role.b'))
  assert.ok(!String(removed.msg ?? '').includes('BEGIN'), 'names the files, never their contents')
  for (const f of files('role.b')) assert.ok(!existsSync(f), `${f} is still there`)
  for (const f of files('role.a')) assert.ok(existsSync(f), `${f} is gone`)
  assert.equal(await stop(sc), 0)
})
