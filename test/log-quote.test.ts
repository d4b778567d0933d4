import assert from 'node:assert/strict'
import { test } from 'node:test'
import { QUOTE_MAX } from '../shared/log-quote.js'
import { alert, SIGNALS, webhook } from './support/gateway.js'
import { startReady, stop } from './support/sidecar.js'

/**
 * Every record that quotes what a client chose quotes at most QUOTE_MAX characters of it, then
 * how long it was: a client does not choose how long a log line is (one on a 12 000-character URL
 * was 24 KB, written while a collector read it).
 */
test("a client's long header value, field name, URL, AlertManager group key and receiver are quoted by their records cut to 1,024 characters, marked with their length", async (t) => {
  const sc = await startReady()
  t.after(() => stop(sc))
  const long = (c: string) => c.repeat(5000)
  const url = `/${long('u')}`
  const token = await sc.url('token')
  const answers = await Promise.all([
    // Header mode with one of its two headers: both quoted by the refusal.
    fetch(`${token}/`, { headers: { 'X-Athenz-Domain': long('d') } }),
    fetch(`${token}/roletoken`, { method: 'POST', body: JSON.stringify({ domain: 'demo', [long('f')]: 1 }) }),
    fetch(`${token}${url}`),
    fetch(`${await sc.url('gateway')}${SIGNALS}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        ...webhook([alert('Quoted')]),
        groupKey: long('g'),
        receiver: long('r'),
        truncatedAlerts: 1,
      }),
    }),
  ])
  assert.deepEqual(
    answers.map((r) => r.status),
    [400, 400, 400, 201],
  )
  await sc.waitForCount('token.request.rejected', 2)
  await sc.waitForCount('token.request', 3)
  const truncated = await sc.waitForEvent('gateway.alerts.truncated')
  const cut = (text: string) => `${text.slice(0, QUOTE_MAX)}…[${text.length} characters, cut]`
  const reasons = sc.events('token.request.rejected').map((r) => String(r.reason))
  assert.ok(reasons.includes(`http headers not set: X-Athenz-Domain[${cut(long('d'))}] X-Athenz-Role[]`))
  assert.ok(reasons.some((r) => r.startsWith(`unknown field "${cut(long('f'))}"`)))
  assert.ok(sc.events('token.request').some((r) => r.path === cut(url) && r.msg === `GET ${cut(url)} 400`))
  assert.deepEqual([truncated.groupKey, truncated.receiver], [cut(long('g')), cut(long('r'))])
  // No record holds more than a few quotes.
  const longest = Math.max(...sc.records.map((r) => JSON.stringify(r).length))
  assert.ok(longest < 4 * QUOTE_MAX, `a record of ${longest} characters`)
})
