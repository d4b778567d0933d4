import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { SinkRecord } from '../workers/gateway/sink.js'
import { resourceName } from '../workers/gateway/sink-kubernetes.js'
import { type KubeApiDouble, type KubeObject, startKubeApi } from './doubles/kube-api.js'
import { eventually } from './support/eventually.js'
import { alert, FIXTURE, gatewayEnv, metric, post, webhook } from './support/gateway.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

async function waitFor(ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!ok()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** A sidecar whose gateway writes to `api`, an API server of its own (token `t`). */
async function kubeGateway(api: KubeApiDouble, env: Record<string, string>): Promise<Sidecar> {
  const dir = mkdtempSync(join(tmpdir(), 'sa-'))
  writeFileSync(join(dir, 'token'), 't')
  writeFileSync(join(dir, 'ca.crt'), api.caPem)
  return startReady({
    env: gatewayEnv({
      GATEWAY_SINK: 'kubernetes',
      GATEWAY_KUBE_API: api.url,
      GATEWAY_KUBE_TOKEN_FILE: join(dir, 'token'),
      GATEWAY_KUBE_CA_FILE: join(dir, 'ca.crt'),
      GATEWAY_KUBE_NAMESPACE: 'monitoring',
      ...env,
    }),
  })
}

/** `n` webhooks of 16 new alerts each. */
const webhooks = (n: number, tag: string) =>
  Array.from({ length: n }, (_, b) =>
    webhook(
      Array.from({ length: 16 }, (_, i) => alert(`${tag}${b}-${i}`, { fingerprint: `${tag}-${b}-${i}` })),
    ),
  )

// The shared sidecar's tests and the slow batches' own sidecars and API servers: side by side.
describe('gateway: kubernetes sink', { concurrency: 2 }, () => {
  describe('gateway: kubernetes sink against an HTTPS API server', { concurrency: 1 }, () => {
    let api: KubeApiDouble
    let sc: Sidecar
    let base: string
    let tokenFile: string

    before(async () => {
      api = await startKubeApi({ token: 'sa-token-1' })
      const dir = mkdtempSync(join(tmpdir(), 'sa-'))
      tokenFile = join(dir, 'token')
      writeFileSync(tokenFile, 'sa-token-1\n')
      writeFileSync(join(dir, 'ca.crt'), api.caPem)
      sc = await startReady({
        env: gatewayEnv({
          GATEWAY_SINK: 'kubernetes',
          GATEWAY_KUBE_API: api.url,
          GATEWAY_KUBE_TOKEN_FILE: tokenFile,
          GATEWAY_KUBE_CA_FILE: join(dir, 'ca.crt'),
          GATEWAY_KUBE_NAMESPACE: 'monitoring',
          GATEWAY_KUBE_GROUP: 'alerts.example.com',
          GATEWAY_KUBE_VERSION: 'v1',
          GATEWAY_KUBE_KIND: 'Signal',
          HEALTH_CHECK_ADDR: '127.0.0.1:0',
        }),
      })
      base = await sc.url('gateway')
    })
    after(async () => {
      assert.equal(await stop(sc), 0)
      await api.close()
      assert.ok(!JSON.stringify(sc.records).includes('sa-token'), 'no service-account token in the logs')
    })

    test('one custom resource per new alert on the REST path, with the service-account token', async () => {
      const r = await post(base, FIXTURE)
      assert.equal(r.status, 201)
      const created = [...api.objects.values()]
      assert.equal(created.length, 2)
      for (const o of created) {
        assert.equal(o.apiVersion, 'alerts.example.com/v1')
        assert.equal(o.kind, 'Signal')
        assert.equal(o.metadata.namespace, 'monitoring')
        assert.match(o.metadata.name, /^alert-[0-9a-f]{32}$/)
      }
      const firing = created.find((o) => o.spec?.fingerprint === '5f1e2c3d4b5a6978')!
      assert.equal(firing.spec?.alertname, 'KubePodCrashLooping')
      assert.equal(firing.spec?.status, 'firing')
      assert.ok(
        api.requests.every(
          (q) =>
            q.path === '/apis/alerts.example.com/v1/namespaces/monitoring/signals' && q.method === 'POST',
        ),
      )
      assert.ok(api.requests.every((q) => q.authorization === 'Bearer sa-token-1'))
    })

    test('a batch of 300 new alerts: 300 resources, over at most 16 connections at once', async () => {
      const batch = webhook(
        Array.from({ length: 300 }, (_, i) => alert(`Many${i}`, { fingerprint: `many-${i}` })),
      )
      const before = api.objects.size
      assert.equal((await post(base, batch)).status, 201)
      assert.equal(api.objects.size, before + 300)
      assert.ok(api.peakConnections() <= 16, `${api.peakConnections()} connections at once`)
    })

    test('a failed create: what was created is kept, the retry writes only the rest; 409 AlreadyExists counts as success', async () => {
      const before = api.objects.size
      const batch = webhook([alert('KubeA'), alert('KubeB')])
      api.failNext(1, 500)
      const failed = await post(base, batch)
      assert.equal(failed.status, 503)
      assert.equal(failed.headers.get('retry-after'), '5')
      assert.equal(failed.body.created, 1)
      assert.equal(api.objects.size, before + 1, 'one of the two was created before the other failed')

      const retry = await post(base, batch)
      assert.equal(retry.status, 201)
      assert.deepEqual([retry.body.created, retry.body.duplicates], [1, 1])
      assert.equal(api.objects.size, before + 2)
      // One the API server holds already (created by a gateway whose deduplication this one does
      // not share, or by a create answered after its deadline): stored.
      const held = alert('KubeHeld', { fingerprint: 'kube-held' })
      const name = resourceName({
        fingerprint: 'kube-held',
        status: 'firing',
        startsAt: held.startsAt,
      } as SinkRecord)
      api.objects.set(`signals/monitoring/${name}`, {
        apiVersion: 'alerts.example.com/v1',
        kind: 'Signal',
        metadata: { name, namespace: 'monitoring' },
      })
      const again = await post(base, webhook([held]))
      assert.deepEqual([again.status, again.body.created], [201, 1])
      assert.equal(api.requests.filter((q) => q.status === 409).length, 1)
      const metrics = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
      assert.equal(metric(metrics, 'gateway_sink_errors_total', { sink: 'kubernetes' }), 1)
    })

    test('an alert whose object is being deleted (409 AlreadyExists "object is being deleted"): 503 and the gateway stays ready; the retry after the deletion stores it', async () => {
      const episodes = sc.events('gateway.not-ready').length
      const held = alert('KubeDeleting', { fingerprint: 'kube-deleting' })
      const name = resourceName({
        fingerprint: 'kube-deleting',
        status: 'firing',
        startsAt: held.startsAt,
      } as SinkRecord)
      const id = `signals/monitoring/${name}`
      // Created before (by another gateway, or this one past its dedup TTL), and a consumer is
      // deleting it: a finalizer is pending.
      api.objects.set(id, {
        apiVersion: 'alerts.example.com/v1',
        kind: 'Signal',
        metadata: { name, namespace: 'monitoring', deletionTimestamp: new Date().toISOString() },
      })
      const batch = webhook([alert('BesideDeleting'), held])
      const since = api.requests.length
      const r = await post(base, batch)
      assert.deepEqual([r.status, r.body.created], [503, 1], 'the other alert is stored')
      assert.deepEqual(
        api.requests
          .slice(since)
          .map((q) => q.status)
          .sort(),
        [201, 409],
      )
      assert.equal(sc.events('gateway.not-ready').length, episodes, 'the sink is not down')
      assert.equal((await fetch(`${base}/ready`)).status, 200)
      api.objects.delete(id) // the deletion ends
      const retry = await post(base, batch)
      assert.deepEqual([retry.status, retry.body.created, retry.body.duplicates], [201, 1, 1])
      assert.equal(api.objects.get(id)?.metadata.deletionTimestamp, undefined, 'created anew')
    })

    test('an alert the API server refuses for what it holds: logged whole, 201 for the rest, not retried for ever', async () => {
      const episodes = sc.events('gateway.not-ready').length
      api.refuseObjects((o) => (o.spec?.labels as Record<string, string> | undefined)?.poison !== undefined)
      try {
        const batch = webhook([alert('Fine'), alert('Poison', { labels: { poison: 'x' } })])
        const r = await post(base, batch)
        assert.equal(r.status, 201)
        assert.deepEqual([r.body.created, r.body.rejected], [1, 1])
        assert.deepEqual(
          (r.body.alerts as { status: string }[]).map((a) => a.status),
          ['rejected'],
        )
        const logged = await sc.waitForEvent('gateway.sink.rejected')
        assert.equal(
          (logged.alert as { alertname: string }).alertname,
          'Poison',
          'the alert, whole, in the log',
        )
        assert.match(logged.reason as string, /422 Invalid/)
        // AlertManager's retry: both are duplicates now, nothing sent to the API server again.
        const creates = api.requests.length
        const retry = await post(base, batch)
        assert.equal(retry.status, 202)
        assert.equal(retry.body.duplicates, 2)
        assert.equal(api.requests.length, creates)
        assert.equal(sc.events('gateway.not-ready').length, episodes, 'the sink stays ready')
        const metrics = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
        assert.equal(metric(metrics, 'gateway_signals_rejected_total'), 1)
        // An API server that refuses every object (a schema no alert fits) is a failed sink: 503.
        api.refuseObjects(() => true)
        const all = await post(base, webhook([alert('Unfit')]))
        assert.equal(all.status, 503)
        await sc.waitForCount('gateway.not-ready', episodes + 1, { degraded: 'sink' })
        const recoveries = sc.events('gateway.ready-again').length
        api.refuseObjects(() => false)
        await sc.waitForCount('gateway.ready-again', recoveries + 1)
      } finally {
        api.refuseObjects(() => false)
      }
    })

    test('an alert an admission webhook denies (403): logged whole, 201 for the rest, not retried for ever', async () => {
      api.refuseObjects(
        (o) => (o.spec?.labels as Record<string, string> | undefined)?.denied !== undefined,
        'admission',
      )
      try {
        const r = await post(base, webhook([alert('Allowed'), alert('Denied', { labels: { denied: 'x' } })]))
        assert.equal(r.status, 201)
        assert.deepEqual([r.body.created, r.body.rejected], [1, 1])
        await sc.waitFor(() =>
          sc
            .events('gateway.sink.rejected')
            .some((e) => /403 Forbidden: admission webhook/.test(String(e.reason))),
        )
        // Every object denied, an ordinary alert's dry run too (RBAC, a namespace being deleted): a
        // failed sink, 503, retried.
        api.refuseObjects(() => true, 'admission')
        assert.equal((await post(base, webhook([alert('AllDenied')]))).status, 503)
      } finally {
        api.refuseObjects(() => false)
      }
    })

    test('an API server that refuses every object (422, or 403 as RBAC): a few creates a batch and one dry run, not a create per alert; one bad object among many leaves the rest stored', async () => {
      const batchOf = (n: number, name: string, bad?: number) =>
        webhook(
          Array.from({ length: n }, (_, i) =>
            alert(`${name}${i}`, { fingerprint: `${name}-${i}`, labels: i === bad ? { poison: 'x' } : {} }),
          ),
        )
      const since = (at: number) => ({
        creates: api.requests.slice(at).filter((q) => !q.dryRun).length,
        dryRuns: api.requests.slice(at).filter((q) => q.dryRun).length,
      })
      // Ready first: the probes (dry runs) of a sink left down by a test before would count here.
      await eventually(async () => ((await fetch(`${base}/ready`)).status === 200 ? true : undefined))
      try {
        for (const by of ['schema', 'admission'] as const) {
          const recoveries = sc.events('gateway.ready-again').length
          api.refuseObjects(() => true, by)
          const at = api.requests.length
          assert.equal((await post(base, batchOf(200, `Refused-${by}`))).status, 503)
          const { creates, dryRuns } = since(at)
          assert.ok(
            creates <= 16,
            `${creates} creates for 200 alerts refused by ${by} (16 at most: those in flight)`,
          )
          assert.equal(dryRuns, 1)
          api.refuseObjects(() => false)
          await sc.waitForCount('gateway.ready-again', recoveries + 1)
        }
        api.refuseObjects((o) => (o.spec?.labels as Record<string, string> | undefined)?.poison !== undefined)
        const at = api.requests.length
        const r = await post(base, batchOf(100, 'OneBad', 3))
        assert.deepEqual([r.status, r.body.created, r.body.rejected], [201, 99, 1])
        assert.deepEqual(since(at), { creates: 100, dryRuns: 1 })
      } finally {
        api.refuseObjects(() => false)
      }
    })

    test('an API server that refuses every object from after a dry run passed: 503, none committed as rejected, the retry stores them', async () => {
      const poison = (o: KubeObject) =>
        (o.spec?.labels as Record<string, string> | undefined)?.poison !== undefined
      const batch = webhook(
        Array.from({ length: 100 }, (_, i) =>
          alert(`Stale${i}`, { fingerprint: `stale-${i}`, labels: i === 0 ? { poison: 'x' } : {} }),
        ),
      )
      await eventually(async () => ((await fetch(`${base}/ready`)).status === 200 ? true : undefined))
      const at = api.requests.length
      const rejections = sc.events('gateway.sink.rejected').length
      const recoveries = sc.events('gateway.ready-again').length
      // The bad alert's refusal runs a dry run, which passes; from its answer on, the server
      // refuses every object (a stricter schema rolled out). Creates take 100 ms: most of the
      // batch's are sent after that answer.
      const dryRunPassed = () => api.requests.slice(at).some((q) => q.dryRun && q.status === 201)
      api.latency(100)
      api.refuseObjects((o) => poison(o) || dryRunPassed())
      try {
        const r = await post(base, batch)
        assert.equal(r.status, 503, JSON.stringify({ ...r.body, alerts: undefined }))
        const stored = r.body.created as number
        assert.equal(r.body.failed, 100 - stored, 'every alert not stored is retried, none rejected')
        assert.equal(sc.events('gateway.sink.rejected').length, rejections, 'no alert logged as refused')
        // The server takes them again (only the bad one refused): AlertManager's retry stores the rest.
        api.latency(0)
        api.refuseObjects(poison)
        await sc.waitForCount('gateway.ready-again', recoveries + 1)
        const retry = await post(base, batch)
        assert.deepEqual(
          [retry.status, retry.body.created, retry.body.duplicates, retry.body.rejected],
          [201, 99 - stored, stored, 1],
        )
        const alertnames = [...api.objects.values()].map((o) => (o.spec as SinkRecord | undefined)?.alertname)
        assert.equal(alertnames.filter((n) => n?.startsWith('Stale')).length, 99)
      } finally {
        api.latency(0)
        api.refuseObjects(() => false)
      }
    })

    test("a 2xx that is not the created object (a proxy's sign-in page): 503, nothing committed, the retry stores it", async () => {
      // A write that succeeds first: the failure below starts an episode of its own, and is logged.
      assert.equal((await post(base, webhook([alert('BeforeImpostor')]))).status, 201)
      const before = api.objects.size
      const failures = sc.events('gateway.sink.failed').length
      const recoveries = sc.events('gateway.ready-again').length
      api.impostorNext(1)
      const r = await post(base, webhook([alert('Impostor')]))
      assert.equal(r.status, 503)
      assert.equal(api.objects.size, before, 'the page stored nothing')
      const [failed] = sc.events('gateway.sink.failed').slice(failures)
      assert.match(
        String((failed?.err as { message?: string })?.message),
        /is not the Signal "alert-[0-9a-f]+"/,
      )
      // Not recorded as a duplicate: AlertManager's retry is written.
      await sc.waitForCount('gateway.ready-again', recoveries + 1)
      const retry = await post(base, webhook([alert('Impostor')]))
      assert.deepEqual([retry.status, retry.body.created], [201, 1])
      assert.equal(api.objects.size, before + 1)
    })

    test('an API server that throttles (429): no create is started once one has failed, not one a record of the batch', async () => {
      const recoveries = sc.events('gateway.ready-again').length
      const creates = () => api.requests.filter((q) => q.method === 'POST' && !q.dryRun).length
      const before = creates()
      api.failNext(1_000_000, 429, 30)
      const batch = webhook(
        Array.from({ length: 200 }, (_, i) => alert(`Throttled${i}`, { fingerprint: `throttled-${i}` })),
      )
      const r = await post(base, batch)
      assert.equal(r.status, 503)
      const made = creates() - before
      assert.ok(
        made >= 1 && made <= 16,
        `${made} creates against a server answering 429 (16 at most: those in flight)`,
      )
      api.failNext(0, 429)
      await sc.waitForCount('gateway.ready-again', recoveries + 1)
      assert.deepEqual([(await post(base, batch)).status, api.objects.size >= 200], [201, true])
    })

    test('a kept-alive connection closed as a create is sent on it: sent again on another, 201, the gateway stays ready', async () => {
      // A create first: its connection waits in the agent's pool, and the next one is sent on it.
      assert.equal((await post(base, webhook([alert('BeforeHangUp')]))).status, 201)
      const episodes = sc.events('gateway.not-ready').length
      const before = api.objects.size
      api.hangUpNext()
      const r = await post(base, webhook([alert('AfterHangUp')]))
      assert.equal(r.status, 201)
      assert.equal(api.objects.size, before + 1)
      assert.deepEqual(
        api.requests.slice(-2).map((q) => q.status),
        [0, 201],
        'closed with no answer, then created',
      )
      assert.equal(sc.events('gateway.not-ready').length, episodes, 'no readiness flap')
    })

    test('the token file is re-read: a rotated token is used on the next write', async () => {
      writeFileSync(tokenFile, 'sa-token-2')
      api.setToken('sa-token-2')
      assert.equal((await post(base, webhook([alert('Rotated')]))).status, 201)
      assert.equal(api.requests.at(-1)?.authorization, 'Bearer sa-token-2')
    })

    test('an API server refusing the token: 503, not ready until a dry run passes, nothing is lost', async () => {
      const health = await sc.url('healthcheck')
      const episodes = sc.events('gateway.not-ready').length
      const recoveries = sc.events('gateway.ready-again').length
      api.setToken('someone-else')
      const r = await post(base, webhook([alert('Refused')]))
      assert.equal(r.status, 503)
      await sc.waitForCount('gateway.not-ready', episodes + 1, { degraded: 'sink' })
      const readyz = await fetch(`${health}/readyz`)
      assert.equal(readyz.status, 503)
      assert.deepEqual(((await readyz.json()) as { notReady: unknown }).notReady, [
        { service: 'gateway', state: 'running', degraded: 'sink' },
      ])
      // Probes are dry runs: refused while the token is, and they store nothing.
      const stored = api.objects.size
      await waitFor(() => api.requests.some((q) => q.dryRun && q.status === 401))
      api.setToken('sa-token-2')
      await sc.waitForCount('gateway.ready-again', recoveries + 1)
      assert.equal((await fetch(`${health}/readyz`)).status, 200)
      assert.ok(
        api.requests.some((q) => q.dryRun && q.status === 201),
        'a dry run passed',
      )
      assert.equal(api.objects.size, stored, 'a probe creates nothing')
      assert.equal((await post(base, webhook([alert('Refused')]))).status, 201)
      assert.equal(api.objects.size, stored + 1)
    })
  })

  test('a batch slower than GATEWAY_SINK_TIMEOUT: what each try stored is kept, the retries write the rest, and the gateway stays ready', async () => {
    const api = await startKubeApi({ token: 't' })
    const sc = await kubeGateway(api, { GATEWAY_SINK_TIMEOUT: '1s' })
    try {
      const base = await sc.url('gateway')
      // 400 creates, 16 at a time, 100 ms each: 2.5 s, where one try has 1 s.
      api.latency(100)
      const batch = webhook(
        Array.from({ length: 400 }, (_, i) => alert(`Slow${i}`, { fingerprint: `slow-${i}` })),
      )
      const tries: { status: number; created: number }[] = []
      // As many tries as AlertManager would make: a loaded run stored 19 to 103 a try.
      for (let i = 0; i < 30; i++) {
        const r = await post(base, batch)
        tries.push({ status: r.status, created: (r.body as { created: number }).created })
        if (r.status < 300) break
        // A sink that stores, slowly, is not down: the gateway stays in the endpoints.
        assert.equal((await fetch(`${base}/ready`)).status, 200, `ready after try ${i + 1}`)
      }
      assert.equal(tries[0]!.status, 503, JSON.stringify(tries))
      assert.ok(
        tries.every((t) => t.created > 0),
        `every try stored some: ${JSON.stringify(tries)}`,
      )
      assert.ok(tries.at(-1)!.status < 300, `the batch got through: ${JSON.stringify(tries)}`)
      assert.equal(
        tries.reduce((n, t) => n + t.created, 0),
        400,
        'each alert created once, by one try',
      )
      await waitFor(() => api.objects.size === 400)
    } finally {
      assert.equal(await stop(sc), 0)
      await api.close()
    }
  })

  test('concurrent webhooks against a slow but healthy API server: those queued behind the others past GATEWAY_SINK_TIMEOUT are answered 503, the retries store them, and the gateway stays ready', async () => {
    const api = await startKubeApi({ token: 't' })
    const sc = await kubeGateway(api, { GATEWAY_SINK_TIMEOUT: '3s' })
    try {
      const base = await sc.url('gateway')
      // 20 webhooks at once, 320 creates over the 16 connections, 500 ms each: 10 s, where each
      // webhook has 3 s. Those queued behind the first few store nothing in theirs. (With 1 s and
      // 200 ms, a loaded run's 16 TLS handshakes took the whole second: nothing was stored by
      // anyone in time, and that is a sink down.)
      api.latency(500)
      const batches = webhooks(20, 'queued')
      const statuses: number[][] = []
      for (let i = 0; i < 10 && !statuses.at(-1)?.every((s) => s < 300); i++) {
        statuses.push((await Promise.all(batches.map((b) => post(base, b)))).map((r) => r.status))
        if (i === 0) {
          assert.ok(statuses[0]!.includes(503), `some queued past their deadline: ${statuses[0]}`)
          // Logged after the readiness it changed, by the same thread: that is in the log by now.
          await sc.waitForEvent('gateway.sink.failed')
        }
        assert.deepEqual(sc.events('gateway.not-ready'), [], 'a slow API server is not a failed one')
      }
      assert.ok(
        statuses.at(-1)!.every((s) => s < 300),
        JSON.stringify(statuses),
      )
      assert.equal(api.objects.size, 320)
      assert.ok(
        // A create answered as its webhook's deadline cut it: the retry finds it (409).
        api.requests.every((q) => q.status === 201 || q.status === 409),
        'every create the API server saw, it made',
      )
    } finally {
      assert.equal(await stop(sc), 0)
      await api.close()
    }
  })

  test('a batch that runs past GATEWAY_SINK_TIMEOUT after the API server broke leaves the gateway not ready', async () => {
    const api = await startKubeApi({ token: 't' })
    const sc = await kubeGateway(api, { GATEWAY_SINK_TIMEOUT: '5s' })
    try {
      const base = await sc.url('gateway')
      // Creates answered after 2 s; three webhooks of 16 share the 16 connections: the first's
      // creates are sent at once, the second's when those are answered, the third's after that,
      // answered past its deadline. Once the first is stored, the API server answers 500 to
      // everything: the second fails, and the third runs out of time with the first's records
      // stored during its own: it was taken for slow, and made the sink up again.
      api.latency(2_000, 'stores')
      const [b1, b2, b3] = webhooks(3, 'broke')
      // The first's creates hold every connection before the others queue behind them.
      const first = post(base, b1!)
      await waitFor(() => api.received() >= 16)
      const [second, third] = [post(base, b2!), post(base, b3!)]
      await waitFor(() => api.requests.filter((q) => q.status === 201).length === 16)
      api.failNext(1e9, 500)
      assert.deepEqual(
        (await Promise.all([first!, second!, third!])).map((r) => r.status),
        [201, 503, 503],
      )
      await sc.waitForEvent('gateway.not-ready', { degraded: 'sink' }, 30_000)
      const notReady = async (when: string) => {
        assert.equal((await fetch(`${base}/ready`)).status, 503, when)
        assert.deepEqual(sc.events('gateway.ready-again'), [], when)
      }
      await notReady('once the third ran out of time')
      const since = api.requests.length
      await waitFor(() => api.requests.slice(since).some((q) => q.dryRun && q.status === 500))
      await notReady('after a probe the API server failed too')
      api.failNext(0, 500)
      await sc.waitForEvent('gateway.ready-again', {}, 30_000)
      assert.equal((await fetch(`${base}/ready`)).status, 200)
    } finally {
      assert.equal(await stop(sc), 0)
      await api.close()
    }
  })

  test('the readiness probe of a sink marked down is not queued behind the creates in flight', async () => {
    const api = await startKubeApi({ token: 't' })
    const sc = await kubeGateway(api, { GATEWAY_SINK_TIMEOUT: '20s' })
    try {
      const base = await sc.url('gateway')
      api.failNext(1, 500)
      assert.equal((await post(base, webhook([alert('Failed')]))).status, 503)
      await sc.waitForEvent('gateway.not-ready', { degraded: 'sink' })
      // Then creates answered after 5 s (a slow etcd; a dry run stores nothing, answered at once):
      // a webhook of 16 holds every connection. The probe, a dry run a second after the failure,
      // queued behind its creates, waited for their answers.
      const since = api.requests.length
      api.latency(5_000, 'stores')
      const held = post(base, webhooks(1, 'held')[0]!)
      await sc.waitForEvent('gateway.ready-again', {}, 15_000)
      assert.deepEqual(
        api.requests.slice(since).filter((q) => !q.dryRun),
        [],
        'ready again before any create was answered',
      )
      assert.equal((await held).status, 201)
    } finally {
      assert.equal(await stop(sc), 0)
      await api.close()
    }
  })
})
