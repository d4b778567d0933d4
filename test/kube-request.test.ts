import assert from 'node:assert/strict'
import { Agent } from 'node:https'
import { after, before, test } from 'node:test'
import { kubeRequest } from '../shared/kube/in-cluster.js'
import { type KubeApiDouble, startKubeApi } from './doubles/kube-api.js'
import { bounded } from './support/bounded.js'

// Every client of the API server (the kubernetes sink, the certificate backup, MODE=init's
// restore) makes its calls through kubeRequest: none may wait on it without end.

let api: KubeApiDouble
let agent: Agent
before(async () => {
  api = await startKubeApi({ token: 't' })
  agent = new Agent({ ca: api.caPem })
})
after(async () => {
  agent.destroy()
  await api.close()
})

const secret = () => new URL('/api/v1/namespaces/payments/secrets/api-cert', api.url)

test('an answer that trickles in is cut at the deadline of the request', async () => {
  api.drip(50) // a byte every 50 ms: the socket is never idle for 400
  try {
    await assert.rejects(bounded(kubeRequest(secret(), { method: 'GET', agent, token: 't' }, 400)), {
      code: 'ERR_KUBE_TIMEOUT',
    })
  } finally {
    api.drip(0)
  }
  const answered = await kubeRequest(secret(), { method: 'GET', agent, token: 't' }, 400)
  assert.equal(answered.status, 404, 'the same request answers once the API server does')
})

test('an answer larger than any object is not read to its end', async () => {
  api.drip(1, 256 * 1024)
  try {
    await assert.rejects(bounded(kubeRequest(secret(), { method: 'GET', agent, token: 't' }, 4_000)), {
      code: 'ERR_KUBE_API',
      message: /answer larger than/,
    })
  } finally {
    api.drip(0)
  }
})

test("the deadline of a request starts once it has its connection: the time it queued in its agent (all the agent's connections busy) is not the API server's", async (t) => {
  const one = new Agent({ ca: api.caPem, keepAlive: true, maxSockets: 1 })
  t.after(() => one.destroy())
  api.latency(600)
  try {
    // The second waits for the first's answer (600 ms) before it is sent, then takes 600 ms of
    // its 1000: counted from the call, it timed out with a healthy API server.
    const [first, second] = await Promise.all([
      kubeRequest(secret(), { method: 'GET', agent: one, token: 't' }, 5_000),
      kubeRequest(secret(), { method: 'GET', agent: one, token: 't' }, 1_000),
    ])
    assert.deepEqual([first.status, second.status], [404, 404])
  } finally {
    api.latency(0)
  }
})
