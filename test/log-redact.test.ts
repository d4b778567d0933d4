import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { describe, it } from 'node:test'
import { CENSOR, redactRecord } from '../shared/log-redact.js'

describe('redactRecord', () => {
  it('compares keys in any case, and reaches a client error five levels down: `err.response.headers.Authorization`', () => {
    const err = Object.assign(new Error('refused'), {
      response: { headers: { Authorization: 'Bearer sekret-1', Cookie: 'sid=sekret-2', 'X-Api-Key': 'k' } },
    })
    // A token type's counts and a Kubernetes Secret's name are no secrets.
    const counts = { updated: 1, failed: 0 }
    const out = redactRecord({ err, PASSWORD: 'sekret-3', accesstoken: counts, secret: 'ns/name' })
    assert.deepEqual((out.err as unknown as typeof err).response.headers, {
      Authorization: CENSOR,
      Cookie: CENSOR,
      'X-Api-Key': CENSOR,
    })
    assert.equal(out.PASSWORD, CENSOR)
    assert.equal(out.accesstoken, counts)
    assert.equal(out.secret, 'ns/name')
  })

  it('replaces a secret key at the top level and in nested objects, to five levels', () => {
    const record = {
      event: 'token.fetched',
      token: 'sekret-1',
      accessToken: 'sekret-2',
      response: { access_token: 'sekret-3', expires_in: 3600 },
      req: { method: 'POST', headers: { authorization: 'Bearer sekret-4', host: 'x' } },
      list: [{ password: 'sekret-5' }, 'plain'],
      deep: { a: { b: { c: { d: { token: 'beyond the fifth level' } } } } },
    }
    const out = redactRecord(record)
    assert.deepEqual(out, {
      event: 'token.fetched',
      token: CENSOR,
      accessToken: CENSOR,
      response: { access_token: CENSOR, expires_in: 3600 },
      req: { method: 'POST', headers: { authorization: CENSOR, host: 'x' } },
      list: [{ password: CENSOR }, 'plain'],
      deep: { a: { b: { c: { d: { token: 'beyond the fifth level' } } } } },
    })
    assert.ok(Array.isArray(out.list))
  })

  it("never changes the caller's objects, and returns a record without a secret as it is", () => {
    const headers = { authorization: 'Bearer x' }
    const record = { req: { headers }, n: 1 }
    const out = redactRecord(record)
    assert.equal(headers.authorization, 'Bearer x')
    assert.notEqual(out.req, record.req)
    assert.equal(out.n, 1)
    const clean = { event: 'x', nested: { a: 1 }, buf: Buffer.from('token') }
    assert.equal(redactRecord(clean), clean)
    assert.equal(redactRecord(clean).nested, clean.nested)
  })

  it("keeps an error's class, message, stack and cause when it censors one of its properties", () => {
    const cause = new Error('root')
    const err = Object.assign(new TypeError('refused', { cause }), { code: 'E_X', token: 'sekret' })
    const out = redactRecord({ err }).err as TypeError & { code: string; token: string }
    assert.ok(out instanceof TypeError)
    assert.notEqual(out, err)
    assert.equal(out.token, CENSOR)
    assert.equal(out.code, 'E_X')
    assert.equal(out.message, 'refused')
    assert.equal(out.stack, err.stack)
    assert.equal(out.cause, cause)
    assert.equal(err.token, 'sekret')
  })
})

describe('the logger', () => {
  it('writes no secret: every record goes through redactRecord, at every level', () => {
    const script = `
      import { createLogger } from ${JSON.stringify(new URL('../shared/logger.js', import.meta.url).href)}
      const log = createLogger('token', 'debug')
      log.info({ event: 'a', token: 'sekret-1', nested: { password: 'sekret-2' } }, 'one')
      log.debug({ event: 'b', req: { headers: { authorization: 'Bearer sekret-3' } } }, 'two')
      log.error({ event: 'c', err: Object.assign(new Error('boom'), { privateKey: 'sekret-4' }) }, 'three')
    `
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    assert.deepEqual(
      lines.map((l) => l.event),
      ['a', 'b', 'c'],
    )
    assert.doesNotMatch(r.stdout, /sekret/)
    assert.equal(lines[0].token, CENSOR)
    assert.equal(lines[0].nested.password, CENSOR)
    assert.equal(lines[0].service, 'token')
    assert.equal(lines[1].req.headers.authorization, CENSOR)
    assert.equal(lines[2].err.privateKey, CENSOR)
    assert.equal(lines[2].err.message, 'boom')
    assert.match(lines[2].err.stack, /Error: boom/)
    assert.equal(lines[2].err.type, 'Error')
  })
})
