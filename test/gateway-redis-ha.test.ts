import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { Cluster } from 'ioredis'
import { parseRedisUrl } from '../shared/config/redis-url.js'
import { DEDUP_KEY_PREFIX } from '../workers/gateway/dedup-redis.js'
import { alert, gatewayEnv, post, readJsonLines, SIGNALS, webhook } from './support/gateway.js'
import { startCluster, startSentinel } from './support/redis-ha.js'
import { CLI, type Sidecar, startReady, stop } from './support/sidecar.js'

const MASTER_PASSWORD = 'master-pw-7c1e'
const SENTINEL_PASSWORD = 'sentinel-pw-3b9d'
const CLUSTER_PASSWORD = 'cluster-pw-51aa'

/** Neither the URL nor a password shows up in what the process printed. */
function assertNoSecrets(sc: Sidecar, ...secrets: string[]) {
  const printed = JSON.stringify(sc.records) + sc.stderr()
  for (const s of ['redis+', ...secrets]) assert.ok(!printed.includes(s), `${s} was logged`)
}

describe('REDIS_URL forms', () => {
  test('parsed into standalone, sentinel and cluster targets', () => {
    assert.deepEqual(parseRedisUrl('rediss://:pw@r.example:6380/1'), {
      mode: 'standalone',
      url: 'rediss://:pw@r.example:6380/1',
    })
    assert.deepEqual(parseRedisUrl('redis+sentinel://:p%40ss@s1:26380,s2,[::1]:26381/mymaster/2'), {
      mode: 'sentinel',
      sentinels: [
        { host: 's1', port: 26380 },
        { host: 's2', port: 26379 },
        { host: '::1', port: 26381 },
      ],
      name: 'mymaster',
      db: 2,
      password: 'p@ss',
      tls: false,
    })
    assert.deepEqual(parseRedisUrl('rediss+cluster://app:pw@n1:7000,n2:7001'), {
      mode: 'cluster',
      nodes: [
        { host: 'n1', port: 7000 },
        { host: 'n2', port: 7001 },
      ],
      username: 'app',
      password: 'pw',
      tls: true,
    })
  })

  const cases: [string, RegExp][] = [
    ['localhost:6379', /scheme/],
    ['http://x', /scheme/],
    ['redis://', /not a valid URL|no host/],
    ['redis+sentinel://:pw@s1:26379', /names the master/],
    ['redis+sentinel://s1:26379/m/x', /path/],
    ['redis+cluster://:pw@n1:7000,:7001', /host\[:port\]/],
    ['redis+cluster://n1:99999', /port/],
    ['redis+cluster://n1:7000/3', /no path/],
  ]
  for (const [url, reason] of cases) {
    test(`${url}: exit 2 naming REDIS_URL, the password not echoed`, () => {
      const r = spawnSync(process.execPath, [CLI], {
        env: { PATH: process.env.PATH ?? '', ...gatewayEnv({ REDIS_URL: url }) },
        encoding: 'utf8',
      })
      assert.equal(r.status, 2, r.stderr)
      assert.match(r.stderr, /REDIS_URL/)
      assert.match(r.stderr, reason)
      assert.ok(!r.stderr.includes(':pw@'), r.stderr)
    })
  }
})

// Each test has its own Redis servers and sidecars, and waits on them more than it works: two at a time.
describe('Sentinel and Cluster', { concurrency: 2 }, () => {
  test('Sentinel: the gateway finds the master through a real Sentinel', async (t) => {
    const redis = await startSentinel({
      name: 'mymaster',
      password: MASTER_PASSWORD,
      sentinelPassword: SENTINEL_PASSWORD,
    })
    t.after(() => redis.stop())
    const [masterPort, sentinelPort] = redis.ports as [number, number]
    const sc = await startReady({
      env: gatewayEnv({
        // Only the Sentinel's address: the master's comes from it.
        REDIS_URL: `redis+sentinel://:${MASTER_PASSWORD}@127.0.0.1:${sentinelPort}/mymaster`,
        REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
      }),
    })
    t.after(() => stop(sc))

    const base = await sc.url('gateway')
    const first = await post(base, webhook([alert('ViaSentinel', { fingerprint: 'sentinel-1' })]))
    assert.equal(first.status, 201)
    const again = await post(base, webhook([alert('ViaSentinel', { fingerprint: 'sentinel-1' })]))
    assert.equal(again.status, 202)
    assert.equal(again.body.duplicates, 1)

    const master = redis.client(masterPort)
    assert.deepEqual(await master.hmget(`${DEDUP_KEY_PREFIX}sentinel-1`, 'status', 'count'), ['firing', '2'])
    assert.deepEqual(
      readJsonLines(join(sc.dataDir, 'alerts.jsonl')).map((r) => r.fingerprint),
      ['sentinel-1'],
    )

    assert.equal(await stop(sc), 0)
    assert.equal(sc.events('gateway.redis.closed').length, 1, 'closed with QUIT')
    assert.equal(sc.events('gateway.redis.up')[0]?.mode, 'sentinel')
    assertNoSecrets(sc, MASTER_PASSWORD, SENTINEL_PASSWORD)
  })

  test('Cluster: batches across slots, exactly-once "new" across two gateways, 503 when it is gone', async (t) => {
    const cluster = await startCluster({ size: 3, password: CLUSTER_PASSWORD })
    t.after(() => cluster.stop())
    // Two of the three nodes: the client discovers the rest.
    const url = `redis+cluster://:${CLUSTER_PASSWORD}@${cluster.ports
      .slice(0, 2)
      .map((p) => `127.0.0.1:${p}`)
      .join(',')}`
    const [a, b] = await Promise.all([
      startReady({ env: gatewayEnv({ REDIS_URL: url, GATEWAY_DEDUP_TIMEOUT: '1s' }) }),
      startReady({
        env: gatewayEnv({ REDIS_URL: url, GATEWAY_SINK: 'redis-stream', GATEWAY_STREAM_KEY: 'alerts' }),
      }),
    ])
    t.after(() => Promise.all([stop(a), stop(b)]))
    const [baseA, baseB] = [await a.url('gateway'), await b.url('gateway')]

    // 15 alerts, 12 fingerprints: 3 repeats inside the batch.
    const batch = Array.from({ length: 15 }, (_, i) => alert(`C${i % 12}`, { fingerprint: `cl-${i % 12}` }))
    const r1 = await post(baseA, webhook(batch))
    assert.equal(r1.status, 201)
    assert.deepEqual([r1.body.created, r1.body.duplicates], [12, 3])
    for (const port of cluster.ports) {
      const keys = await cluster.client(port).keys(`${DEDUP_KEY_PREFIX}*`)
      assert.ok(keys.length > 0, `node ${port} holds some of the batch: it spans slots on every node`)
    }
    const r2 = await post(baseB, webhook(batch))
    assert.equal(r2.status, 202)
    assert.deepEqual([r2.body.created, r2.body.duplicates], [0, 15])

    // The same 30 new fingerprints to both at once: each is new for exactly one of them.
    const race = Array.from({ length: 30 }, (_, i) => alert(`R${i}`, { fingerprint: `race-${i}` }))
    const detail = `${SIGNALS}?detail=1`
    const [ra, rb] = await Promise.all([
      post(baseA, webhook(race), {}, detail),
      post(baseB, webhook([...race].reverse()), {}, detail),
    ])
    assert.deepEqual([ra.status < 300, rb.status < 300], [true, true], 'the loser waits for the commit')
    assert.equal((ra.body.created as number) + (rb.body.created as number), 30)
    const created = [ra, rb]
      .flatMap((r) => r.body.alerts as { fingerprint: string; status: string }[])
      .filter((x) => x.status === 'created')
      .map((x) => x.fingerprint)
    assert.equal(new Set(created).size, 30)
    assert.equal(created.length, 30)

    // b's redis-stream sink wrote its share to the cluster.
    const reader = new Cluster([{ host: '127.0.0.1', port: cluster.ports[0]! }], {
      redisOptions: { password: CLUSTER_PASSWORD },
    })
    t.after(() => reader.disconnect())
    const streamed = (await reader.xrange('alerts', '-', '+')).map(([, f]) => f[f.indexOf('fingerprint') + 1])
    const inFile = readJsonLines(join(a.dataDir, 'alerts.jsonl')).map((r) => r.fingerprint)
    assert.equal(streamed.length, rb.body.created)
    assert.deepEqual(
      [...inFile, ...streamed].sort(),
      [...created, ...batch.slice(0, 12).map((x) => x.fingerprint!)].sort(),
    )

    assert.equal(await stop(b), 0)
    assert.equal(b.events('gateway.redis.closed').length, 1, 'every node closed with QUIT')
    assertNoSecrets(b, CLUSTER_PASSWORD)

    // The cluster gone: 503 with Retry-After, as for a standalone Redis.
    reader.disconnect()
    await cluster.stop()
    const down = await post(baseA, webhook([alert('WhileDown', { fingerprint: 'down-1' })]))
    assert.equal(down.status, 503)
    assert.equal(down.headers.get('retry-after'), '5')
    assert.equal(down.headers.get('content-type'), 'application/problem+json')
    assert.equal(await stop(a), 0)
    assert.equal(a.events('gateway.redis.up')[0]?.mode, 'cluster')
    assertNoSecrets(a, CLUSTER_PASSWORD)
  })

  test('Cluster: a master that stops answering keeps the gateway not ready, though the node with the probe key answers', async (t) => {
    const cluster = await startCluster({ size: 3, password: CLUSTER_PASSWORD })
    t.after(() => cluster.stop())
    const url = `redis+cluster://:${CLUSTER_PASSWORD}@127.0.0.1:${cluster.ports[0]}`
    const sc = await startReady({ env: gatewayEnv({ REDIS_URL: url, GATEWAY_DEDUP_TIMEOUT: '300ms' }) })
    t.after(() => stop(sc, 'SIGKILL'))
    const base = await sc.url('gateway')
    const metrics = `${await sc.url('metrics')}/metrics`
    const storeUp = async () =>
      /^gateway_dedup_store_up\{[^}]*\} (\d)/m.exec(await (await fetch(metrics)).text())?.[1]
    assert.equal((await post(base, webhook([alert('Before', { fingerprint: 'before-1' })]))).status, 201)

    // A master other than the one that holds the probe key hangs.
    const admin = cluster.client(cluster.ports[0]!)
    const slot = Number(await admin.call('CLUSTER', 'KEYSLOT', `${DEDUP_KEY_PREFIX}probe`))
    const owners = (await admin.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][]
    const probeNode = owners.find(([from, to]) => slot >= from && slot <= to)![2][1]
    const hung = cluster.ports.find((p) => p !== probeNode)!
    cluster.pause(hung)
    t.after(() => cluster.resume(hung))

    // Alerts on every node's slots: the hung one fails the batch.
    const batch = Array.from({ length: 30 }, (_, i) => alert(`H${i}`, { fingerprint: `hung-${i}` }))
    assert.equal((await post(base, webhook(batch))).status, 503)
    await sc.waitForEvent('gateway.not-ready')
    // Probed once a second: the probe asks every master, so it keeps failing while one hangs.
    for (let i = 0; i < 2; i++) {
      await new Promise((r) => setTimeout(r, 1000))
      assert.equal(await storeUp(), '0', `still not ready after ${i + 1} s`)
    }
    assert.equal(sc.events('gateway.ready-again').length, 0, 'readiness did not flap')
    await sc.waitForEvent('gateway.redis.reconnecting')

    cluster.resume(hung)
    await sc.waitForEvent('gateway.ready-again', {}, 15_000)
    assert.equal((await post(base, webhook([alert('After', { fingerprint: 'after-1' })]))).status, 201)
    assert.equal(await stop(sc), 0)
  })
})
