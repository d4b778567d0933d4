import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fingerprintOf } from '../workers/gateway/fingerprint.js'
import { parseWebhook } from '../workers/gateway/payload.js'

/** Label maps straight from JSON.parse: names that are also Object.prototype's are plain labels. */

async function alertFrom(labels: string): Promise<Parameters<typeof fingerprintOf>[0]> {
  const body = `{"version":"4","status":"firing","alerts":[{"status":"firing","labels":${labels}}]}`
  const parsed = await parseWebhook(body)
  assert.ok(parsed.ok, JSON.stringify(parsed))
  return parsed.webhook.alerts[0]!
}

test('a configured label absent from the alert counts as empty, never as a prototype member', async () => {
  const bare = await alertFrom('{"alertname":"A"}')
  const empty = await alertFrom('{"alertname":"A","constructor":"","toString":""}')
  for (const names of [
    ['constructor', 'alertname'],
    ['toString', 'alertname'],
    ['__proto__', 'alertname'],
  ])
    assert.equal(fingerprintOf(bare, names), fingerprintOf(empty, names), names.join(','))
})

test('__proto__ and constructor are labels like any other: kept, and part of the fingerprint', async () => {
  const a = await alertFrom('{"alertname":"A","__proto__":"x","constructor":"y"}')
  assert.deepEqual(Object.keys(a.labels).sort(), ['__proto__', 'alertname', 'constructor'])
  assert.match(JSON.stringify(a.labels), /"__proto__":"x"/)
  const b = await alertFrom('{"alertname":"A","__proto__":"z","constructor":"y"}')
  assert.notEqual(fingerprintOf(a, []), fingerprintOf(b, []))
  assert.notEqual(fingerprintOf(a, ['__proto__']), fingerprintOf(b, ['__proto__']))
})

test('a label value that is not a string is a 400 naming its path', async () => {
  const parsed = await parseWebhook(
    '{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"n":1}}]}',
  )
  assert.equal(parsed.ok, false)
  if (!parsed.ok) assert.equal(parsed.path, '$.alerts[0].labels.n')
})
