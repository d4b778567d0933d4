import assert from 'node:assert/strict'
import { createPublicKey, type JsonWebKey, verify } from 'node:crypto'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { type Sidecar, startReady, stop } from '../test/support/sidecar.js'
import { httpsRequest } from './doubles/zts-https.js'
import { parsePromText } from './support/prom-text.js'
import { sendUnterminated } from './support/unterminated.js'

// Two sidecars for the whole file: A plain HTTP with a target and token files, B with mutual TLS
// and a one-second refresh and idle eviction.
// biome-ignore lint/suspicious/noExplicitAny: JSON bodies under test are probed field by field
type Json = any

let a: Sidecar
let b: Sidecar
let base: string
const dirA = mkdtempSync(join(tmpdir(), 'sia-token-a-'))
const dirB = mkdtempSync(join(tmpdir(), 'sia-token-b-'))
// B's token server presents the service certificate the certificate service wrote (it starts first).
const mtls = {
  TOKEN_SERVER_TLS_CERT_PATH: join(dirB, 'cert.pem'),
  TOKEN_SERVER_TLS_KEY_PATH: join(dirB, 'key.pem'),
  TOKEN_SERVER_TLS_CA_PATH: join(dirB, 'ca.pem'),
}
const client = () => ({
  cert: readFileSync(join(dirB, 'cert.pem')),
  key: readFileSync(join(dirB, 'key.pem')),
  ca: readFileSync(join(dirB, 'ca.pem')),
})
async function postB(path: string, body: unknown) {
  const port = (await b.waitForEvent('server.listening', { service: 'token' })).port as number
  const r = await httpsRequest(`https://127.0.0.1:${port}${path}`, client(), {
    method: 'POST',
    body: JSON.stringify(body),
  })
  return { status: r.status, json: JSON.parse(r.body) as Json }
}
const seen: string[] = [] // every token a test received: none may appear in a log line

async function post(path: string, body: unknown) {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { status: res.status, type: res.headers.get('content-type'), json: (await res.json()) as Json }
}

function decode(part: string): Json {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'))
}

async function jwksKey(kid: string) {
  const res = await fetch(`${base}/oauth2/keys`)
  assert.equal(res.status, 200)
  const { keys } = (await res.json()) as { keys: (JsonWebKey & { kid: string })[] }
  const jwk = keys.find((k) => k.kid === kid)
  assert.ok(jwk, `no key ${kid} in the JWKS`)
  return createPublicKey({ key: jwk, format: 'jwk' })
}

before(async () => {
  ;[a, b] = await Promise.all([
    startReady({
      dataDir: dirA,
      // debug: every request is logged, so the redaction check below sees all of them
      env: { TARGET_DOMAIN_ROLES: 'demo:role.reader', TOKEN_DIR: join(dirA, 'tokens'), LOG_LEVEL: 'debug' },
    }),
    startReady({
      dataDir: dirB,
      env: {
        ...mtls,
        TOKEN_REFRESH_INTERVAL: '1s',
        TOKEN_CACHE_IDLE_EVICT: '1s',
        TARGET_DOMAIN_ROLES: 'demo:role.writer',
        TOKEN_ALLOW_PROXY_FOR_PRINCIPAL: 'true',
      },
    }),
  ])
  base = await a.url('token')
})

after(async () => {
  await Promise.all([a && stop(a), b && stop(b)])
})

describe('token server, local provider', () => {
  it('issues an access token that verifies against the JWKS', async () => {
    const r = await post('/accesstoken', { domain: 'demo', role: 'reader' })
    assert.equal(r.status, 200)
    assert.equal(r.json.token_type, 'Bearer')
    assert.equal(r.json.scope, 'demo:role.reader')
    assert.ok(r.json.expires_in > 60)
    const token: string = r.json.access_token
    seen.push(token)
    const [h, c, s] = token.split('.') as [string, string, string]
    const header = decode(h)
    assert.equal(header.alg, 'RS256')
    const key = await jwksKey(header.kid)
    assert.ok(verify('sha256', Buffer.from(`${h}.${c}`), key, Buffer.from(s, 'base64url')))
    const claims = decode(c)
    assert.equal(claims.aud, 'demo')
    assert.equal(claims.scope, 'demo:role.reader')
    assert.equal(claims.sub, 'sia.local.workload')
    assert.ok(claims.exp > Date.now() / 1000 + 60)
    // A tampered token does not verify.
    const forged = Buffer.from(JSON.stringify({ ...claims, scope: 'demo:role.admin' })).toString('base64url')
    assert.equal(verify('sha256', Buffer.from(`${h}.${forged}`), key, Buffer.from(s, 'base64url')), false)
  })

  it('serves a cached access token for the same key and a new one for another expiry', async () => {
    const one = await post('/accesstoken', { domain: 'demo', role: 'cached' })
    const two = await post('/accesstoken', { domain: 'demo', role: 'cached' })
    const other = await post('/accesstoken', { domain: 'demo', role: 'cached', expiry: 600 })
    seen.push(one.json.access_token, other.json.access_token)
    assert.equal(one.json.access_token, two.json.access_token)
    assert.notEqual(other.json.access_token, one.json.access_token)
    // What is left of 600 s, in whole seconds, a moment after the fetch.
    assert.ok([599, 600].includes(other.json.expires_in), String(other.json.expires_in))
  })

  it('a cached access token answers what is left of its lifetime', async () => {
    const first = await post('/accesstoken', { domain: 'demo', role: 'lifetime', expiry: 120 })
    seen.push(first.json.access_token)
    assert.ok([119, 120].includes(first.json.expires_in), String(first.json.expires_in))
    await sleep(2100)
    const again = await post('/accesstoken', { domain: 'demo', role: 'lifetime', expiry: 120 })
    assert.equal(again.json.access_token, first.json.access_token, 'the cached token')
    const exp: number = decode(again.json.access_token.split('.')[1]).exp
    assert.ok(
      again.json.expires_in <= first.json.expires_in - 2,
      `${again.json.expires_in} after ${first.json.expires_in}`,
    )
    assert.ok(
      again.json.expires_in <= exp - Date.now() / 1000 + 1,
      `${again.json.expires_in}: the token ends at ${exp}`,
    )
  })

  it('issues a signed role token in the Athenz form', async () => {
    const r = await post('/roletoken', { domain: 'demo', role: 'reader', min_expiry: 100 })
    assert.equal(r.status, 200)
    const token: string = r.json.token
    seen.push(token)
    assert.match(
      token,
      /^v=Z1;d=demo;r=reader;p=sia\.local\.workload;a=[0-9a-f]+;t=\d+;e=\d+;k=[\w-]+;s=[\w-]+$/,
    )
    assert.equal(r.json.expiryTime, Number(/;e=(\d+)/.exec(token)![1]))
    const unsigned = token.slice(0, token.lastIndexOf(';s='))
    const kid = /;k=([\w-]+)/.exec(token)![1]!
    const sig = Buffer.from(token.slice(token.lastIndexOf(';s=') + 3), 'base64url')
    assert.ok(verify('sha256', Buffer.from(unsigned), await jwksKey(kid), sig))
  })

  it('answers header mode with Authorization and Athenz-Role-Auth', async () => {
    const res = await fetch(`${base}/`, { headers: { 'X-Athenz-Domain': 'demo', 'X-Athenz-Role': 'reader' } })
    assert.equal(res.status, 200)
    const body = (await res.json()) as Json
    const auth = res.headers.get('authorization')!
    assert.match(auth, /^bearer [\w-]+\.[\w-]+\.[\w-]+$/)
    // SIA's body: the two tokens and nothing else.
    assert.deepEqual(Object.keys(body).sort(), ['accesstoken', 'roletoken'])
    assert.equal(auth.slice('bearer '.length), body.accesstoken)
    assert.match(res.headers.get('athenz-role-auth')!, /^v=Z1;d=demo;r=reader;/)
    assert.equal(res.headers.get('athenz-role-auth'), body.roletoken)
    seen.push(body.accesstoken, body.roletoken)
  })

  it('answers client errors with 400 problem+json, and any other request in header mode, as SIA', async () => {
    for (const [path, body, detail] of [
      ['/accesstoken', { role: 'reader' }, /domain is required/],
      ['/accesstoken', 'not json', /invalid JSON body/],
      ['/accesstoken', { domain: 'demo', expiry: -5 }, /expiry must be a whole number/],
      ['/roletoken', { domain: 'bad domain!' }, /domain is not a valid Athenz name/],
      ['/roletoken', { domain: 'demo', min_expiry: 'soon' }, /min_expiry/],
      // SIA decodes with DisallowUnknownFields: a misspelt lifetime is not a default one.
      ['/accesstoken', { domain: 'demo', role: 'reader', expires_in: 60 }, /unknown field "expires_in"/],
      ['/roletoken', { domain: 'demo', role: 'reader', expiry: 60 }, /unknown field "expiry"/],
      // Athenz names: no empty segment, no trailing dot or comma.
      ['/accesstoken', { domain: 'a..b', role: 'reader' }, /domain is not a valid Athenz name/],
      ['/accesstoken', { domain: 'demo.', role: 'reader' }, /domain is not a valid Athenz name/],
      ['/roletoken', { domain: 'demo', role: 'reader,' }, /role is not a valid Athenz name/],
    ] as const) {
      const r = await post(path, body)
      assert.equal(r.status, 400, `${path} ${JSON.stringify(body)}`)
      assert.equal(r.type, 'application/problem+json')
      assert.match(r.json.detail, detail)
    }
    const noHeaders = await fetch(`${base}/`)
    assert.equal(noHeaders.status, 400)
    assert.match(((await noHeaders.json()) as Json).detail, /http headers not set/)
    const unknown = await fetch(`${base}/nope`)
    assert.equal(unknown.status, 400)
    assert.equal(unknown.headers.get('content-type'), 'application/problem+json')
    assert.match(((await unknown.json()) as Json).detail, /http headers not set/)
    // An auth sub-request keeps the path and method of the request it authorizes.
    const headers = { 'X-Athenz-Domain': 'demo', 'X-Athenz-Role': 'reader' }
    for (const [method, path] of [
      ['GET', '/proxy/path?x=1'],
      ['POST', '/'],
      ['HEAD', '/api/v1/items'],
      ['GET', '/jwks'], // the JWKS route, but asking for tokens
      ['GET', '/oauth2/keys'],
    ] as const) {
      const res = await fetch(`${base}${path}`, { method, headers })
      assert.equal(res.status, 200, `${method} ${path}`)
      assert.match(res.headers.get('authorization') ?? '', /^bearer /, `${method} ${path}`)
      await res.arrayBuffer()
    }
    // Several roles at once, as Athenz names joined by commas.
    assert.equal((await post('/accesstoken', { domain: 'demo', role: 'reader,writer' })).status, 200)
  })

  it('caps a requested expiry at 24h: 1e300 does not give a far-future token', async () => {
    const day = 24 * 3600
    const at = await post('/accesstoken', { domain: 'demo', role: 'capped', expiry: 1e300 })
    assert.equal(at.status, 200)
    seen.push(at.json.access_token)
    assert.ok([day - 1, day].includes(at.json.expires_in), String(at.json.expires_in)) // what is left of a day
    const claims = decode(at.json.access_token.split('.')[1])
    assert.equal(claims.exp - claims.iat, day)
    for (const body of [
      { domain: 'demo', role: 'capped', max_expiry: 1e300 },
      { domain: 'demo', role: 'capped', min_expiry: 1e300 },
      { domain: 'demo', role: 'capped', max_expiry: 2 * day },
    ]) {
      const rt = await post('/roletoken', body)
      assert.equal(rt.status, 200, JSON.stringify(body))
      seen.push(rt.json.token)
      const issued = Number(/;t=(\d+)/.exec(rt.json.token)![1])
      assert.equal(rt.json.expiryTime - issued, day, JSON.stringify(body))
    }
    // Within the cap, the request is honoured.
    const short = await post('/accesstoken', { domain: 'demo', role: 'capped', expiry: 7200 })
    seen.push(short.json.access_token)
    assert.ok([7199, 7200].includes(short.json.expires_in), String(short.json.expires_in))
    // As ZTS: a role token's max_expiry comes first, whatever the least lifetime (TOKEN_EXPIRY's).
    for (const body of [
      { domain: 'demo', role: 'short', max_expiry: 600 },
      { domain: 'demo', role: 'short', min_expiry: 7200, max_expiry: 600 },
    ]) {
      const rt = await post('/roletoken', body)
      assert.equal(rt.status, 200, JSON.stringify(body))
      seen.push(rt.json.token)
      const issued = Number(/;t=(\d+)/.exec(rt.json.token)![1])
      assert.equal(rt.json.expiryTime - issued, 600, JSON.stringify(body))
    }
  })

  it('refuses proxy_for_principal unless TOKEN_ALLOW_PROXY_FOR_PRINCIPAL is set: 403', async () => {
    for (const path of ['/accesstoken', '/roletoken']) {
      const r = await post(path, { domain: 'demo', role: 'reader', proxy_for_principal: 'victim.service' })
      assert.equal(r.status, 403, path)
      assert.equal(r.type, 'application/problem+json')
      assert.equal(r.json.title, 'Forbidden')
      assert.match(r.json.detail, /proxy_for_principal is not allowed.*TOKEN_ALLOW_PROXY_FOR_PRINCIPAL=true/)
    }
    // Without it the same request is served.
    assert.equal((await post('/accesstoken', { domain: 'demo', role: 'reader' })).status, 200)
  })

  it('writes token files of the targets under TOKEN_DIR with mode 0600', async () => {
    const dir = join(dirA, 'tokens')
    const at = join(dir, 'demo:role.reader.accesstoken')
    const rt = join(dir, 'demo:role.reader.roletoken')
    const fromApi = await post('/accesstoken', { domain: 'demo', role: 'reader' })
    assert.equal(readFileSync(at, 'utf8'), fromApi.json.access_token)
    assert.equal(statSync(at).mode & 0o777, 0o600)
    assert.equal(statSync(rt).mode & 0o777, 0o600)
    assert.match(readFileSync(rt, 'utf8'), /^v=Z1;d=demo;r=reader;/)
  })

  it('a request answered before its body is read (413, header mode) closes: its body is not read', {
    timeout: 15_000,
  }, async () => {
    // A server that read and discarded the rest would take all 64 MiB, then wait for more.
    const total = 64 * 1024 * 1024
    for (const [line, status] of [
      ['POST /nowhere', 400], // header mode, without its headers
      ['POST /accesstoken', 413],
      ['GET /', 400],
    ] as const) {
      const r = await sendUnterminated(base, total, `${line} HTTP/1.1\r\nhost: x\r\n`)
      assert.match(r.head, new RegExp(`^HTTP/1\\.1 ${status} `), line)
      assert.match(r.head, /connection: close/i, line)
      assert.ok(r.sent < total, `${line}: answered before the body was sent (${r.sent} bytes)`)
    }
  })

  it('exports the cache metrics', async () => {
    // Two tokens of one (domain, role), an hour and two minutes, cached in either order: the
    // series says the one that expires first.
    for (const [role, first, second] of [
      ['both-a', 120, 0],
      ['both-b', 0, 120],
    ] as const) {
      for (const expiry of [first, second]) {
        const r = await post('/accesstoken', { domain: 'demo', role, ...(expiry ? { expiry } : {}) })
        seen.push(r.json.access_token)
      }
    }
    const text = await (await fetch(`${await a.url('metrics')}/metrics`)).text()
    for (const role of ['both-a', 'both-b']) {
      const series = new RegExp(
        `^token_expires_in_seconds\\{type="accesstoken",domain="demo",role="${role}"[^}]*\\} (\\d+)$`,
        'gm',
      )
      const values = [...text.matchAll(series)].map((m) => Number(m[1]))
      assert.equal(values.length, 1, role)
      assert.ok(values[0]! > 100 && values[0]! <= 120, `${role}: ${values[0]}`)
    }
    const value = (re: RegExp) => Number(re.exec(text)?.[1])
    assert.ok(value(/^cached_token_entries\{type="accesstoken"[^}]*\} (\d+)$/m) >= 2)
    assert.ok(value(/^cached_token_bytes\{type="roletoken"[^}]*\} (\d+)$/m) > 100)
    const left = value(
      /^token_expires_in_seconds\{type="accesstoken",domain="demo",role="reader"[^}]*\} (\d+)$/m,
    )
    assert.ok(left > 3000 && left <= 3600, `expires in ${left}`)
  })
})

describe('token server, mutual TLS, refresh and eviction', () => {
  it('requires a client certificate when TOKEN_SERVER_TLS_CA_PATH is set', async () => {
    const ok = await postB('/accesstoken', { domain: 'demo', role: 'writer' })
    assert.equal(ok.status, 200)
    seen.push(ok.json.access_token)
    const port = (await b.waitForEvent('server.listening', { service: 'token' })).port as number
    await assert.rejects(
      httpsRequest(
        `https://127.0.0.1:${port}/accesstoken`,
        { ca: client().ca },
        { method: 'POST', body: '{}' },
      ),
    )
    await assert.rejects(fetch(`http://127.0.0.1:${port}/`))
  })

  it('refreshes cached target tokens every TOKEN_REFRESH_INTERVAL', async () => {
    const get = async () =>
      (await postB('/roletoken', { domain: 'demo', role: 'writer' })).json.token as string
    const first = await get()
    const n = b.events('token.cache.updated').length
    await b.waitFor(
      (r) => r.event === 'token.cache.updated' && b.events('token.cache.updated').length > n + 1,
    )
    const second = await get()
    seen.push(first, second)
    assert.notEqual(second, first)
  })

  it('evicts tokens nobody asked for within TOKEN_CACHE_IDLE_EVICT, keeping targets', async () => {
    seen.push((await postB('/accesstoken', { domain: 'demo', role: 'idle' })).json.access_token)
    await b.waitForEvent('token.cache.evicted')
    const text = await (await fetch(`${await b.url('metrics')}/metrics`)).text()
    assert.doesNotMatch(text, /token_expires_in_seconds\{type="accesstoken",domain="demo",role="idle"/)
    assert.match(text, /token_expires_in_seconds\{type="accesstoken",domain="demo",role="writer"/)
  })

  it('honours proxy_for_principal with TOKEN_ALLOW_PROXY_FOR_PRINCIPAL=true', async () => {
    const at = await postB('/accesstoken', {
      domain: 'demo',
      role: 'writer',
      proxy_for_principal: 'app.frontend',
    })
    assert.equal(at.status, 200)
    seen.push(at.json.access_token)
    const claims = decode(at.json.access_token.split('.')[1])
    assert.equal(claims.sub, 'app.frontend')
    assert.equal(claims.proxy, 'sia.local.workload')
    const rt = await postB('/roletoken', {
      domain: 'demo',
      role: 'writer',
      proxy_for_principal: 'app.frontend',
    })
    assert.equal(rt.status, 200)
    seen.push(rt.json.token)
    assert.match(rt.json.token, /;p=sia\.local\.workload;proxy=app\.frontend;/)
  })
})

describe('token server logs', () => {
  it('never logs a token, up to the last record', async () => {
    assert.ok(seen.length >= 8)
    // Stopped first, so every record, shutdown included, has been read.
    assert.deepEqual(await Promise.all([stop(a), stop(b)]), [0, 0])
    for (const sc of [a, b]) {
      for (const r of sc.records) {
        const line = JSON.stringify(r)
        for (const t of seen) assert.ok(!line.includes(t.slice(-40)), `token in log: ${r.event}`)
      }
    }
    assert.ok(a.events('token.request').length >= 8, 'at debug every request is logged')
    assert.ok(
      b.events('token.request').every((r) => (r.status as number) >= 400),
      'at info only failed requests are logged',
    )
  })
})

it('no token server (TOKEN_SERVER_ADDR empty, or USE_TOKEN_SERVER=false): the target token files are written alone, as SIA', async () => {
  for (const off of [{ TOKEN_SERVER_ADDR: '' }, { USE_TOKEN_SERVER: 'false' }] as Record<string, string>[]) {
    const dir = mkdtempSync(join(tmpdir(), 'sia-token-files-'))
    const sc = await startReady({
      dataDir: dir,
      env: {
        TARGET_DOMAIN_ROLES: 'demo:role.reader',
        TOKEN_DIR: join(dir, 'tokens'),
        GATEWAY_ADDR: '',
        ...off,
      },
    })
    try {
      assert.ok(sc.events('token.files.only').length === 1, JSON.stringify(off))
      assert.deepEqual(
        sc.events('server.listening').filter((r) => r.service === 'token'),
        [],
        'no token server listens',
      )
      for (const type of ['accesstoken', 'roletoken']) {
        const file = join(dir, 'tokens', `demo:role.reader.${type}`)
        assert.ok(readFileSync(file, 'utf8').length > 100, `${type} written`)
        assert.equal(statSync(file).mode & 0o777, 0o600)
      }
    } finally {
      assert.equal(await stop(sc), 0)
    }
  }
})

it('TOKEN_REFRESH_INTERVAL=0: idle tokens are still evicted; a token with under a minute left is served, never cached or exported', async () => {
  const sc = await startReady({
    env: {
      TOKEN_REFRESH_INTERVAL: '0',
      TOKEN_CACHE_IDLE_EVICT: '1s',
      GATEWAY_ADDR: '',
      HEALTH_CHECK_ADDR: '',
    },
  })
  try {
    const url = await sc.url('token')
    const ask = async (body: unknown) => {
      const res = await fetch(`${url}/accesstoken`, { method: 'POST', body: JSON.stringify(body) })
      assert.equal(res.status, 200)
      return (await res.json()) as Json
    }
    const scrape = async () => (await fetch(`${await sc.url('metrics')}/metrics`)).text()
    await ask({ domain: 'demo', role: 'idle' })
    assert.match(await scrape(), /token_expires_in_seconds\{type="accesstoken",domain="demo",role="idle"/)
    // Evicted on a schedule of its own (it was done only at a refresh, and there is none).
    await sc.waitForEvent('token.cache.evicted', {}, 10_000)
    const short = await ask({ domain: 'demo', role: 'short', expiry: 30 })
    assert.ok(short.expires_in <= 30, String(short.expires_in))
    const again = await ask({ domain: 'demo', role: 'short', expiry: 30 })
    assert.notEqual(again.access_token, short.access_token, 'not served from the cache')
    const text = await scrape()
    assert.doesNotMatch(text, /role="idle"/)
    assert.doesNotMatch(text, /role="short"/, 'its 30 s would hide the time left of the role')
    const entries = parsePromText(text).find(
      (m) => m.name === 'cached_token_entries' && m.labels.type === 'accesstoken',
    )
    assert.equal(entries?.value, 0)
    // HEAD of the JWKS as its GET, with no body (it was header mode's 400).
    for (const path of ['/oauth2/keys', '/jwks']) {
      const head = await fetch(`${url}${path}`, { method: 'HEAD' })
      assert.equal(head.status, 200, path)
      assert.match(head.headers.get('content-type') ?? '', /^application\/json/)
      assert.equal(await head.text(), '')
    }
  } finally {
    assert.equal(await stop(sc), 0)
  }
})
