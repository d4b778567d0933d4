import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { TokenSource } from '../shared/identity/tokens.js'
import { Registry } from '../shared/prom.js'
import { createTokenCache } from '../workers/token/cache.js'
import { countFetchErrors } from '../workers/token/fetch-metrics.js'

// The ZTS client reports a cancelled call as its own error (ERR_UPSTREAM, not an AbortError).
const failing = (why: string) =>
  Object.assign(new Error(`ZTS POST /oauth2/token: ${why}`), { code: 'ERR_UPSTREAM' })
const source: TokenSource = {
  roleToken: async () => {
    throw failing('answered 500')
  },
  accessToken: async (_req, signal) => {
    throw failing(signal.aborted ? 'This operation was aborted' : 'no answer within 10000ms')
  },
}

test('token_fetch_errors_total counts failed fetches, not those the shutdown cancelled', async () => {
  const registry = new Registry()
  const counted = countFetchErrors(source, registry, ['accesstoken', 'roletoken'])
  const req = { domain: 'd', role: 'r', proxyForPrincipal: '', expiry: 60 }
  const cancelled = new AbortController()
  cancelled.abort()
  await assert.rejects(counted.accessToken(req, cancelled.signal))
  await assert.rejects(counted.accessToken(req, new AbortController().signal))
  await assert.rejects(
    counted.roleToken({ ...req, minExpiry: 0, maxExpiry: 60 }, new AbortController().signal),
  )
  const values = (await registry.getSingleMetric('token_fetch_errors_total')!.get()).values
  const of = (type: string) => values.find((v) => v.labels.type === type)?.value
  assert.equal(of('accesstoken'), 1, 'the deadline counts, the cancel does not')
  assert.equal(of('roletoken'), 1)
})

test("ZTS refusing what a client asked is not counted; refusing a configured target's token is", async () => {
  const refused = (status: number) => Object.assign(failing(`answered ${status}`), { status, fromZts: true })
  const refusing: TokenSource = {
    roleToken: async () => {
      throw refused(403)
    },
    accessToken: async () => {
      throw refused(404)
    },
  }
  const registry = new Registry()
  const ask = (domain: string, proxyForPrincipal = '') => ({
    domain,
    role: 'reader',
    proxyForPrincipal,
    expiry: 3600,
  })
  const roleAsk = (domain: string, minExpiry = 3600) => ({ ...ask(domain), minExpiry, maxExpiry: 0 })
  const counted = countFetchErrors(refusing, registry, ['accesstoken', 'roletoken'], {
    roletoken: [roleAsk('mine')],
    accesstoken: [ask('mine')],
  })
  const signal = new AbortController().signal
  await assert.rejects(counted.accessToken(ask('other'), signal))
  await assert.rejects(counted.roleToken(roleAsk('other'), signal))
  // A client's ask for the target's domain and role, with its own proxy or lifetime: its own.
  await assert.rejects(counted.accessToken(ask('mine', 'user.mallory'), signal))
  await assert.rejects(counted.roleToken(roleAsk('mine', 999_999), signal))
  await assert.rejects(counted.accessToken(ask('mine'), signal))
  await assert.rejects(counted.roleToken(roleAsk('mine'), signal))
  const values = (await registry.getSingleMetric('token_fetch_errors_total')!.get()).values
  assert.deepEqual(
    values.map((v) => [v.labels.type, v.value]).sort(),
    [
      ['accesstoken', 1],
      ['roletoken', 1],
    ],
    'the target refused, the client asks not',
  )
})

test('a fetch every caller gave up on at its deadline is counted; one the shutdown ended while the boot waited is not', async () => {
  const registry = new Registry()
  const hanging: TokenSource = {
    roleToken: (_req, signal) =>
      new Promise((_, reject) =>
        signal.addEventListener('abort', () => reject(failing('This operation was aborted')), { once: true }),
      ),
    accessToken: async () => {
      throw failing('unused')
    },
  }
  const counted = countFetchErrors(hanging, registry, ['roletoken'])
  const stopped = new AbortController()
  const cache = createTokenCache({
    fetch: (k, signal) => counted.roleToken({ ...k }, signal),
    expiresAt: () => Date.now() + 3600_000,
    size: () => 1,
    idleMs: 0,
    maxEntries: 10,
    maxBytes: 1 << 20,
    signal: stopped.signal,
  })
  const key = { domain: 'd', role: 'r', proxyForPrincipal: '', minExpiry: 0, maxExpiry: 0 }
  const total = async () =>
    (await registry.getSingleMetric('token_fetch_errors_total')!.get()).values[0]!.value
  // A client's TOKEN_SERVER_TIMEOUT, or the boot's deadline (as AbortSignal.timeout's, whose
  // unref'd timer alone would let Node 22 end the test's loop first): ZTS too slow.
  const deadline = new AbortController()
  setTimeout(() => deadline.abort(new DOMException('The operation timed out.', 'TimeoutError')), 10)
  await assert.rejects(cache.get(key, deadline.signal))
  await new Promise((r) => setTimeout(r, 20))
  assert.equal(await total(), 1)
  // The service stops while the boot waits (its signal aborts with the shutdown's reason).
  const service = new AbortController()
  const waiting = cache.get(
    { ...key, role: 'other' },
    AbortSignal.any([service.signal, AbortSignal.timeout(60_000)]),
  )
  service.abort()
  await assert.rejects(waiting)
  await new Promise((r) => setTimeout(r, 20))
  assert.equal(await total(), 1, 'not a failure')
})
