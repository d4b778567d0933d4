import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import type { Config } from '../shared/config/types.js'
import { createSecretBackup } from '../shared/identity/backup.js'
import { kubeAgent, kubeRequest } from '../shared/kube/in-cluster.js'
import { createKubernetesSink } from '../workers/gateway/sink-kubernetes.js'
import { startKubeApi } from './doubles/kube-api.js'

// What every client of the API server shares (shared/kube/in-cluster.ts): the service account's
// files as they are now, and the API server's URL as the operator wrote it.

function serviceAccount(caPem: string): { dir: string; token: string; ca: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sia-sa-'))
  writeFileSync(join(dir, 'token'), 't\n')
  writeFileSync(join(dir, 'ca.crt'), caPem)
  return { dir, token: join(dir, 'token'), ca: join(dir, 'ca.crt') }
}

function clients(api: string, sa: { token: string; ca: string }) {
  const sink = createKubernetesSink({
    api,
    tokenFile: sa.token,
    caFile: sa.ca,
    namespace: 'monitoring',
    group: 'alerts.example.com',
    version: 'v1',
    kind: 'Signal',
    plural: '',
  })
  const backup = createSecretBackup({
    backupKubeApi: api,
    namespace: 'payments',
    backupKubeTokenFile: sa.token,
    backupKubeCaFile: sa.ca,
    certSecret: 'api-cert',
    serviceAccount: 'api',
    backup: 'read+write',
  } as Config)
  return Promise.all([sink, backup])
}

test("the cluster's CA rotates: the next call trusts the new ca.crt, with no restart", async (t) => {
  const [before, api] = await Promise.all([startKubeApi({ token: 't' }), startKubeApi({ token: 't' })])
  t.after(() => Promise.all([before.close(), api.close()]))
  // The mount still holds the CA the API server's certificate was signed by until now.
  const sa = serviceAccount(before.caPem)
  const [sink, backup] = await clients(api.url, sa)
  t.after(() => Promise.all([sink.close(), backup.close()]))
  await assert.rejects(sink.probe!(), { code: 'ERR_KUBE_API' })
  await assert.rejects(backup.read(AbortSignal.timeout(5000)), { code: 'ERR_KUBE_API' })
  writeFileSync(sa.ca, api.caPem) // the kubelet rewrites the projected ca.crt
  await sink.probe!()
  assert.equal(
    await backup.read(AbortSignal.timeout(5000)),
    undefined,
    'no such secret: read, and answered 404',
  )
  assert.ok(
    api.requests.some((r) => r.dryRun),
    'the probe reached the API server',
  )
})

test('an API server behind a proxy at a path is asked under that path', async (t) => {
  const api = await startKubeApi({ token: 't', pathPrefix: '/k8s/clusters/c-1' })
  t.after(() => api.close())
  assert.match(api.url, /\/k8s\/clusters\/c-1$/)
  const [sink, backup] = await clients(api.url, serviceAccount(api.caPem))
  t.after(() => Promise.all([sink.close(), backup.close()]))
  await sink.probe!()
  api.addServiceAccount('payments', 'api')
  await backup.write({ keyPem: 'k', certPem: 'c' }, AbortSignal.timeout(5000))
  assert.ok(api.secrets.has('payments/api-cert'))
  assert.deepEqual(
    api.requests.map((r) => `${r.method} ${r.path} ${r.status}`),
    [
      'POST /apis/alerts.example.com/v1/namespaces/monitoring/signals 201',
      'GET /api/v1/namespaces/payments/serviceaccounts/api 200',
      'PATCH /api/v1/namespaces/payments/secrets/api-cert 201',
    ],
  )
})

test('an answer cut off in its body is ERR_KUBE_API naming the API server', async (t) => {
  const api = await startKubeApi({ token: 't' })
  t.after(() => api.close())
  const agents = kubeAgent(serviceAccount(api.caPem).ca)
  t.after(() => agents.destroy())
  api.cutNext()
  const url = new URL('/api/v1/namespaces/payments/secrets/api-cert', api.url)
  await assert.rejects(kubeRequest(url, { method: 'GET', agent: await agents.current(), token: 't' }), {
    code: 'ERR_KUBE_API',
    message: /^API server 127\.0\.0\.1:\d+: /,
  })
})

test('a secret whose tls.crt or tls.key is not a string is ERR_BACKUP naming it, not a TypeError', async (t) => {
  const api = await startKubeApi({ token: 't' })
  t.after(() => api.close())
  const [sink, backup] = await clients(api.url, serviceAccount(api.caPem))
  t.after(() => Promise.all([sink.close(), backup.close()]))
  for (const data of [
    { 'tls.crt': 42, 'tls.key': 'a2V5' },
    { 'tls.crt': 'Y2VydA==', 'tls.key': { k: 1 } },
  ]) {
    api.secrets.set('payments/api-cert', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'api-cert', namespace: 'payments', uid: 'u' },
      // Not what the API server's schema allows: what a broken proxy or a hand-made double could send.
      data: data as unknown as Record<string, string>,
    })
    await assert.rejects(backup.read(AbortSignal.timeout(5000)), {
      code: 'ERR_BACKUP',
      message: 'secret payments/api-cert has no tls.crt and tls.key',
    })
  }
})
