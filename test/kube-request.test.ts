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
