import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createZtsClient } from '../shared/identity/zts-client.js'
import { startZtsDouble, type ZtsDouble } from './doubles/zts.js'
import { bounded } from './support/bounded.js'

let zts: ZtsDouble
let identity: { keyPem: string; certPem: string; caPem: string }
before(async () => {
  zts = await startZtsDouble()
  identity = { ...(await zts.issue('my.team.api')), caPem: '' }
})
after(() => zts?.close())

function client() {
  const c = createZtsClient({ endpoint: zts.url, serverCaPem: zts.caPem, timeoutMs: 400, attempts: 2 })
  c.setIdentity(identity)
  return c
}

test('an answer that trickles in is cut at the deadline of the attempt, each attempt', async () => {
  zts.drip('cacerts', 50) // a byte every 50 ms: the socket is never idle for 400
  const c = client()
  try {
    const t0 = performance.now()
    await assert.rejects(bounded(c.call('GET', '/cacerts/athenz', undefined, new AbortController().signal)), {
      code: 'ERR_UPSTREAM',
      message: /GET \/cacerts\/athenz: no answer within 400ms/,
    })
    const ms = performance.now() - t0
    assert.ok(ms >= 800, `two attempts of 400 ms each (${Math.round(ms)} ms)`)
  } finally {
    zts.drip('cacerts', 0)
    c.close()
  }
  const before = zts.counts.cacerts
  const ok = client()
  try {
    // The same call answers once ZTS does.
    await ok.call('GET', '/cacerts/athenz', undefined, new AbortController().signal)
    assert.equal(zts.counts.cacerts, before + 1)
  } finally {
    ok.close()
  }
})

test('a cancelled call ends at once, with the caller reason, not a retry', async () => {
  zts.drip('cacerts', 50)
  const c = client()
  try {
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 100)
    const before = zts.counts.cacerts
    await assert.rejects(c.call('GET', '/cacerts/athenz', undefined, ac.signal), (err: Error) => {
      assert.doesNotMatch(err.message, /no answer within/)
      return true
    })
    assert.equal(zts.counts.cacerts, before + 1, 'no second attempt after the cancel')
  } finally {
    zts.drip('cacerts', 0)
    c.close()
  }
})

test('an answer larger than any ZTS sends is not read to its end', async () => {
  zts.drip('cacerts', 1, 64 * 1024)
  const c = client()
  try {
    await assert.rejects(bounded(c.call('GET', '/cacerts/athenz', undefined, new AbortController().signal)), {
      code: 'ERR_UPSTREAM',
      message: /answer larger than 1048576 bytes/,
    })
  } finally {
    zts.drip('cacerts', 0)
    c.close()
  }
})

test('a 2xx that is not a JSON object (empty, cut, a proxy page) is no answer: retried, then ERR_UPSTREAM', async () => {
  const signal = new AbortController().signal
  for (const [body, type] of [
    ['', 'application/json'],
    ['{"certs":"-----BEGIN', 'application/json'],
    ['<html>gateway</html>', 'text/html'],
  ] as const) {
    const before = zts.counts.cacerts
    zts.answerNext('cacerts', body, type)
    const c = client()
    try {
      const res = await c.call<{ certs: string }>('GET', '/cacerts/athenz', undefined, signal)
      assert.equal(typeof res.certs, 'string', 'the retry got the answer')
      assert.equal(zts.counts.cacerts, before + 2, JSON.stringify(body))
    } finally {
      c.close()
    }
  }
  zts.answerNext('cacerts', '')
  const once = createZtsClient({ endpoint: zts.url, serverCaPem: zts.caPem, timeoutMs: 400, attempts: 1 })
  once.setIdentity(identity)
  try {
    await assert.rejects(once.call('GET', '/cacerts/athenz', undefined, signal), {
      code: 'ERR_UPSTREAM',
      message: 'ZTS GET /cacerts/athenz answered 200 without a JSON object',
    })
  } finally {
    once.close()
  }
})
