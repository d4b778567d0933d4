import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { MessageChannel, type MessagePort, type Transferable } from 'node:worker_threads'
import { codedError } from '../shared/errors.js'
import { createLogger } from '../shared/logger.js'
import type { Target } from '../shared/ports/apis.js'
import { remoteOn, serveOn } from '../shared/ports/comlink.js'
import { createServicePorts } from '../shared/ports/service-ports.js'
import type { SupervisorOps, WorkerOps } from '../shared/protocol.js'
import { createRpc } from '../shared/rpc.js'
import type { ServiceName } from '../shared/services.js'
import { createPortBroker } from '../supervisor/port-broker.js'
import type { WorkerHandle } from '../supervisor/worker-handle.js'
import { providerEnv, startZtsDouble } from './doubles/zts.js'
import { serverPorts } from './support/ports.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

/** DESIGN.md §9: typed calls between services over comlink, none waiting forever. */

/**
 * One worker's side of the ports, with the supervisor's side played here over real
 * MessageChannels: `serve(api)` wires the next link to `api` (a worker of its own, with its id);
 * `down()` reports the target's current worker gone, `down(target, id)` an earlier one.
 */
function harness(timeoutMs: number) {
  const control = new MessageChannel()
  const worker = createRpc<SupervisorOps, WorkerOps>(control.port1)
  const supervisor = createRpc<WorkerOps, SupervisorOps>(control.port2)
  const ports = createServicePorts(worker, timeoutMs, () => {})
  let api: object | undefined
  let server = 0
  const served: MessageChannel['port2'][] = []
  const wire = async (target: Target) => {
    if (!api) throw codedError('ERR_SERVICE_DOWN', `${target} is down`)
    const { port1, port2 } = new MessageChannel()
    serveOn(port2, api, Object.keys(api), () => {})
    served.push(port2)
    await supervisor.request('port.connect', { target, port: port1, server: ++server }, 1000, [port1])
  }
  supervisor.handle('port.request', async ({ target }) => {
    await wire(target)
    return null
  })
  return {
    ports,
    serve: (a: object) => {
      api = a
    },
    rewire: (target: Target) => wire(target),
    /** The id of the worker the last link leads to. */
    server: () => server,
    down: async (target: Target, id = server) => {
      if (id === server) api = undefined
      await supervisor.request('port.down', { target, server: id }, 1000)
    },
    close: () => {
      for (const p of [control.port1, control.port2, ...served]) p.close()
    },
  }
}

/**
 * Posts comlink's wire messages on `port` as any caller can, each with an id of its own: resolves
 * with the reply to it.
 */
function comlinkMessages(port: MessagePort) {
  let n = 0
  return (msg: object, transfer: Transferable[] = []) => {
    const id = `raw-${++n}`
    return new Promise<Record<string, unknown>>((resolve) => {
      const on = (m: { id?: string }) => {
        if (m.id !== id) return
        port.off('message', on)
        resolve(m as Record<string, unknown>)
      }
      port.on('message', on)
      port.postMessage({ ...msg, id }, transfer)
    })
  }
}

/** The code of the error a comlink reply carries, or undefined when it answers with a value. */
function refusal(reply: Record<string, unknown>): unknown {
  if (reply.type !== 'HANDLER' || reply.name !== 'throw') return undefined
  return (reply.value as { code?: unknown }).code
}

describe('service ports', () => {
  test('a caller is served only the methods it may call: no other method, no field, no write into the serving thread', async () => {
    const { port1, port2 } = new MessageChannel()
    const api = {
      collect: () => 'metrics',
      identity: () => ({ keyPem: 'PRIVATE KEY' }),
      secret: 'a field',
    }
    const refused: string[] = []
    serveOn(port2, api, ['collect'], (type) => refused.push(type))
    const remote = remoteOn<{ collect(): string; identity(): unknown; secret: string }>(port1)
    const send = comlinkMessages(port1)
    try {
      assert.equal(await remote.collect(), 'metrics')
      await assert.rejects(remote.identity(), { code: 'ERR_NO_METHOD' })
      await assert.rejects(async () => await remote.secret, { code: 'ERR_PORT_REFUSED' })
      // comlink's own messages, as any caller can post them: writes through the prototype chain
      // of the facade and of a served method (Function.prototype, then Object.prototype).
      const raw = { type: 'RAW', value: 'from a caller' }
      for (const path of [
        ['__proto__', 'polluted'],
        ['collect', '__proto__', 'polluted'],
        ['collect', '__proto__', '__proto__', 'polluted'],
      ]) {
        assert.equal(
          refusal(await send({ type: 'SET', path, value: raw })),
          'ERR_PORT_REFUSED',
          `SET ${path}`,
        )
      }
      assert.equal(Object.hasOwn(Object.prototype, 'polluted'), false)
      assert.equal(Object.hasOwn(Function.prototype, 'polluted'), false)
      // A read along a method, a construction, a new endpoint: none is answered but as refused.
      assert.equal(
        refusal(await send({ type: 'GET', path: ['collect', 'constructor', 'name'] })),
        'ERR_PORT_REFUSED',
      )
      assert.equal(
        refusal(await send({ type: 'CONSTRUCT', path: ['collect'], argumentList: [] })),
        'ERR_PORT_REFUSED',
      )
      const endpoint = await send({ type: 'ENDPOINT' })
      assert.equal(refusal(endpoint), 'ERR_PORT_REFUSED', 'no port of its own, unguarded')
      assert.equal(refusal(await send({ type: 'RELEASE' })), 'ERR_PORT_REFUSED')
      assert.deepEqual(refused, [
        'APPLY',
        'GET',
        'SET',
        'SET',
        'SET',
        'GET',
        'CONSTRUCT',
        'ENDPOINT',
        'RELEASE',
      ])
      assert.equal(await remote.collect(), 'metrics', 'still served')
    } finally {
      port1.close()
      port2.close()
    }
  })

  test('a comlink message of another shape is not run and not thrown on the serving thread; calls after it are answered', async () => {
    const { port1, port2 } = new MessageChannel()
    const seen: unknown[][] = []
    serveOn(
      port2,
      {
        collect: (...args: unknown[]) => {
          seen.push(args)
          return 'metrics'
        },
      },
      ['collect'],
      () => {},
    )
    const remote = remoteOn<{ collect(): string }>(port1)
    const send = comlinkMessages(port1)
    const uncaught: unknown[] = []
    const onUncaught = (err: unknown) => uncaught.push(err)
    process.on('uncaughtException', onUncaught)
    try {
      const proxied = new MessageChannel()
      const junk: [object, Transferable[]][] = [
        [{ type: 'APPLY', path: ['collect'], argumentList: 5 }, []],
        [{ type: 'APPLY', path: 'collect', argumentList: [] }, []],
        [{ type: 'APPLY', path: ['collect'] }, []],
        [{ type: 'APPLY', path: ['collect', 'call'], argumentList: [] }, []],
        [{ type: 'APPLY', path: [['collect']], argumentList: [] }, []],
        // Arguments this thread would deserialise as the caller chose: a proxy to a port of its own.
        [
          {
            type: 'APPLY',
            path: ['collect'],
            argumentList: [{ type: 'HANDLER', name: 'proxy', value: proxied.port1 }],
          },
          [proxied.port1],
        ],
        [{ type: 'APPLY', path: ['collect'], argumentList: [{ type: 'HANDLER', name: 'nosuch' }] }, []],
        [{ type: 'NOSUCH', path: ['collect'], argumentList: [] }, []],
      ]
      for (const [msg, transfer] of junk)
        assert.equal(refusal(await send(msg, transfer)), 'ERR_PORT_REFUSED', JSON.stringify(msg))
      proxied.port2.close()
      port1.postMessage(null)
      port1.postMessage(7)
      assert.equal(await remote.collect(), 'metrics')
      assert.deepEqual(seen, [[]], 'only the well-formed call ran')
      await new Promise((resolve) => setImmediate(resolve))
      assert.deepEqual(uncaught, [])
    } finally {
      process.off('uncaughtException', onUncaught)
      port1.close()
      port2.close()
    }
  })

  test('the broker wires only the calls CALLS allows: the gateway may not ask the certificate service for the identity', async () => {
    const broker = createPortBroker(
      { collect: () => [], lastErrors: () => ({}) },
      createLogger('supervisor', 'silent'),
    )
    const caller = (service: ServiceName) => {
      const control = new MessageChannel()
      const h = { service, rpc: createRpc<WorkerOps, SupervisorOps>(control.port2), alive: () => true }
      broker.attach(service, h as unknown as WorkerHandle)
      return {
        worker: createRpc<SupervisorOps, WorkerOps>(control.port1),
        close: () => {
          control.port1.close()
          control.port2.close()
        },
      }
    }
    const gateway = caller('gateway')
    const metrics = caller('metrics')
    try {
      await assert.rejects(
        gateway.worker.request('port.request', { target: 'certificate', wait: false }, 1000),
        {
          code: 'ERR_CALL_NOT_ALLOWED',
        },
      )
      await assert.rejects(
        gateway.worker.request('port.request', { target: 'supervisor', wait: false }, 1000),
        {
          code: 'ERR_CALL_NOT_ALLOWED',
        },
      )
      // A name the allowlist only has through its prototype.
      await assert.rejects(
        metrics.worker.request('port.request', { target: 'constructor' as Target, wait: false }, 1000),
        { code: 'ERR_CALL_NOT_ALLOWED' },
      )
      // The metrics service may collect the supervisor's registry: wired (answered once connected).
      const connected = new Promise((resolve) =>
        metrics.worker.handle('port.connect', ({ port }) => {
          port.close() // and with it the supervisor's end
          resolve(true)
          return null
        }),
      )
      assert.equal(
        await metrics.worker.request('port.request', { target: 'supervisor', wait: false }, 1000),
        null,
      )
      assert.equal(await connected, true)
    } finally {
      gateway.close()
      metrics.close()
    }
  })

  test('a thrown coded error arrives with its name, message and code', async () => {
    const h = harness(1000)
    h.serve({
      identity() {
        throw codedError('ERR_NO_IDENTITY', 'not yet')
      },
    })
    await assert.rejects(h.ports.connect('certificate').identity(), {
      code: 'ERR_NO_IDENTITY',
      message: 'not yet',
    })
    h.close()
  })

  test('a call to a target that does not answer rejects at its deadline', async () => {
    const h = harness(150)
    h.serve({ collect: () => new Promise(() => {}) })
    const t0 = Date.now()
    await assert.rejects(h.ports.connect('gateway').collect(), { code: 'ERR_SERVICE_TIMEOUT' })
    assert.ok(Date.now() - t0 >= 140)
    h.close()
  })

  /**
   * A gateway whose worker never answers `collect`, and one call to it on its way (a 60 s
   * deadline), once it has reached the worker.
   */
  async function hungCall() {
    const h = harness(60_000)
    // Returned once the call has reached the worker (on a loaded machine, 20 ms was not always
    // enough: a successor served meanwhile took the first link).
    let reached: () => void = () => {}
    const arrived = new Promise<void>((r) => {
      reached = r
    })
    h.serve({
      collect: () => {
        reached()
        return new Promise(() => {})
      },
    })
    const gateway = h.ports.connect('gateway')
    const call = gateway.collect()
    call.catch(() => {}) // looked at by the test once the worker is gone
    await arrived
    return { h, gateway, call }
  }

  test('a call in flight when the target goes down rejects at once with ERR_SERVICE_DOWN; the same proxy reaches its replacement', async () => {
    const { h, gateway, call } = await hungCall()
    const t0 = Date.now()
    await h.down('gateway')
    await assert.rejects(call, { code: 'ERR_SERVICE_DOWN' })
    assert.ok(Date.now() - t0 < 1000, 'well before its 60s deadline')
    await assert.rejects(gateway.collect(), { code: 'ERR_SERVICE_DOWN' }, 'a new call while it is down')
    h.serve({ collect: () => [{ name: 'from_the_new_worker' }] })
    await h.rewire('gateway')
    assert.deepEqual(await gateway.collect(), [{ name: 'from_the_new_worker' }])
    h.close()
  })

  test('a call still on a replaced worker that ends before it answers is answered by its successor at once, within the same deadline', async (t) => {
    const { h, gateway, call: onTheOld } = await hungCall()
    t.after(h.close) // a failed assertion leaves no port open to hold the file's process
    const old = h.server()
    h.serve({ collect: () => [{ name: 'from_the_successor' }] })
    await h.rewire('gateway') // the successor serves; the old worker drains its call
    const t0 = Date.now()
    await h.down('gateway', old) // it ended without answering (a scrape in a reload)
    assert.deepEqual(
      await onTheOld,
      [{ name: 'from_the_successor' }],
      'not ERR_SERVICE_DOWN: a worker serves',
    )
    assert.ok(Date.now() - t0 < 1000, 'well before its 60s deadline')
    assert.deepEqual(await gateway.collect(), [{ name: 'from_the_successor' }], 'the successor is not cut')
  })

  test('a call asked again of a successor keeps its first deadline', async (t) => {
    const h = harness(1000)
    t.after(h.close)
    h.serve({ collect: () => new Promise(() => {}) })
    const gateway = h.ports.connect('gateway')
    const t0 = Date.now()
    const call = assert.rejects(gateway.collect(), { code: 'ERR_SERVICE_TIMEOUT' })
    await new Promise((r) => setTimeout(r, 800))
    const old = h.server()
    await h.rewire('gateway') // a successor that does not answer either
    await h.down('gateway', old)
    await call
    const ms = Date.now() - t0
    // A second deadline would have been 800 + 1000 ms in.
    assert.ok(ms >= 990 && ms < 1700, `rejected at the first deadline (${ms}ms), not a second one`)
  })
})

function withConfig(services: Record<string, Record<string, unknown>>): string[] {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-ports-')), 'config.json')
  writeFileSync(path, JSON.stringify({ services }))
  return ['--config', path]
}

async function scrape(sc: Sidecar): Promise<{ ms: number; text: string }> {
  const t0 = Date.now()
  const res = await fetch(`${await sc.url('metrics')}/metrics`)
  assert.equal(res.status, 200)
  const text = await res.text()
  return { ms: Date.now() - t0, text }
}

const up = (text: string, service: string) =>
  Number(new RegExp(`^sia_worker_up\\{service="${service}"\\} (\\d)$`, 'm').exec(text)?.[1])

describe('the scrape over service ports', () => {
  test('a blocked worker is up 0 at METRICS_SCRAPE_TIMEOUT, every other worker present', async () => {
    const sc = await startReady({
      env: { SIA_FAILPOINTS: 'gateway.before-task:server=1*block', METRICS_SCRAPE_TIMEOUT: '1s' },
      args: withConfig({ gateway: { watchdogTimeout: '5s', shutdownTimeout: '1s' } }),
    })
    const { ms, text } = await scrape(sc)
    // Not waiting for the blocked thread, which its watchdog ends at 5 s: well before that, with
    // room for a loaded machine (1581 ms once, with three test files and a review beside it).
    assert.ok(ms >= 1000 && ms < 3500, `answered in ${ms}ms`)
    assert.equal(up(text, 'gateway'), 0)
    for (const s of ['certificate', 'token', 'memory-reporter', 'metrics', 'healthcheck']) {
      assert.equal(up(text, s), 1, s)
      assert.match(text, new RegExp(`^sia_worker_tasks\\{service="${s}"\\} \\d`, 'm'), `${s} series present`)
    }
    assert.match(text, /^process_resident_memory_bytes /m, "the supervisor's own registry")
    await stop(sc)
  })

  test('scrapes all through two SIGHUP reloads: every worker up and its series present in each (the one replaced answers through its successor)', async () => {
    // Fixed ports: a successor listens on its predecessor's (port 0 would be another one).
    const sc = await startReady({ env: { ...(await serverPorts()).env, GATEWAY_ADDR: '' } })
    const services = ['certificate', 'token', 'memory-reporter', 'metrics', 'healthcheck']
    const bad: string[] = []
    let scrapes = 0
    let done = false
    const scraper = async () => {
      while (!done) {
        // A kept-alive connection the replaced metrics worker closes as a scrape goes out on it is
        // tried again, as Prometheus's client does (Go retries an idempotent request then).
        const res = await fetch(`${await sc.url('metrics')}/metrics`).catch(() => undefined)
        if (!res) continue
        const text = await res.text()
        if (res.status !== 200) bad.push(`HTTP ${res.status}`)
        scrapes++
        for (const s of services) {
          if (up(text, s) !== 1) bad.push(`${s} up ${up(text, s)}`)
          if (!new RegExp(`^sia_worker_tasks\\{service="${s}"\\} \\d`, 'm').test(text))
            bad.push(`${s} series missing`)
        }
      }
    }
    const scraping = [scraper(), scraper()]
    try {
      for (let n = 1; n <= 2; n++) {
        sc.kill('SIGHUP')
        await sc.waitForCount('supervisor.reload.done', n, {}, 30_000)
      }
      // Each predecessor's drain is said once it ends, after the reload's record.
      await sc.waitForCount('worker.replaced', 2 * services.length, { reason: 'reload' })
    } finally {
      done = true
      await Promise.all(scraping)
    }
    assert.ok(scrapes > 10, `${scrapes} scrapes`)
    assert.deepEqual(bad, [])
    assert.equal(await stop(sc), 0)
  })

  test('a worker that dies mid-call ends the call at once; after its restart the scrape reaches the new worker', async () => {
    const sc = await startReady({
      env: { SIA_FAILPOINTS: 'gateway.before-task:server=1*block', METRICS_SCRAPE_TIMEOUT: '30s' },
      args: withConfig({ gateway: { watchdogTimeout: '2s', restartBackoff: '20ms' } }),
    })
    // The gateway is blocked: the watchdog ends it about 2s in, and its call with it.
    const { ms, text } = await scrape(sc)
    assert.ok(ms < 15_000, `answered in ${ms}ms, not at the 30s deadline`)
    assert.equal(up(text, 'gateway'), 0)
    await sc.waitForEvent('worker.restarted', { service: 'gateway' })
    const after = await scrape(sc)
    assert.equal(up(after.text, 'gateway'), 1)
    assert.match(after.text, /^sia_worker_tasks\{service="gateway"\} 1$/m)
    assert.equal(await stop(sc), 0)
  })
})

/**
 * A preload (`--import`) that makes the metrics worker a hostile caller: on every port it is wired
 * to (the supervisor's registry, each worker's), before its first call, a write through a served
 * method's prototype chain into Object.prototype, then ENDPOINT, and on a port that brings back, a
 * call whose argument list is not a list (what threw on comlink's serving thread).
 */
const HOSTILE_METRICS = `import { isMainThread, MessagePort, parentPort, workerData } from 'node:worker_threads'
if (!isMainThread) {
  let service = typeof workerData === 'object' ? workerData?.service : undefined
  if (typeof workerData === 'string') parentPort.once('message', (m) => { service = m?.service })
  const on = MessagePort.prototype.on
  const wired = new Set()
  const attack = (port) => {
    on.call(port, 'message', (m) => {
      if (m?.id === 'hostile-endpoint' && m.value instanceof MessagePort)
        m.value.postMessage({ id: 'hostile-apply', type: 'APPLY', path: ['collect'], argumentList: 5 })
    })
    port.postMessage({ id: 'hostile-set', type: 'SET', path: ['collect', '__proto__', '__proto__', 'polluted'], value: { type: 'RAW', value: 'from the metrics worker' } })
    port.postMessage({ id: 'hostile-endpoint', type: 'ENDPOINT' })
  }
  MessagePort.prototype.on = function (event, listener) {
    if (event !== 'message') return on.call(this, event, listener)
    return on.call(this, event, function (msg) {
      if (service === 'metrics' && msg?.k === 'req' && msg.op === 'port.connect' && !wired.has(msg.args.target)) {
        wired.add(msg.args.target)
        attack(msg.args.port)
      }
      return listener.apply(this, arguments)
    })
  }
}
`

test('a hostile caller on the service ports (a write through the prototype chain, ENDPOINT, a malformed call) is refused: the sidecar and every service go on, exit 0', async () => {
  const preload = join(mkdtempSync(join(tmpdir(), 'sia-ports-hostile-')), 'hostile-metrics.mjs')
  writeFileSync(preload, HOSTILE_METRICS)
  const sc = await startReady({
    command: (node, argv) => ({ file: node, args: ['--import', preload, ...argv] }),
  })
  try {
    // The first scrape wires the metrics worker to the supervisor and to every other worker.
    await fetch(`${await sc.url('metrics')}/metrics`).catch(() => undefined)
    const refused = (service: string, type: string) =>
      sc.waitFor((r) => r.event === 'ports.call.refused' && r.service === service && r.type === type)
    for (const type of ['SET', 'ENDPOINT']) {
      await refused('supervisor', type)
      await refused('certificate', type)
    }
    const bySupervisor = sc.events('ports.call.refused').find((r) => r.service === 'supervisor')
    assert.equal(bySupervisor?.caller, 'metrics')
    const { text } = await scrape(sc)
    for (const s of ['certificate', 'token', 'memory-reporter', 'gateway', 'metrics', 'healthcheck'])
      assert.equal(up(text, s), 1, s)
    assert.match(text, /^process_resident_memory_bytes /m, "the supervisor's own registry")
    assert.equal((await fetch(`${await sc.url('healthcheck')}/readyz`)).status, 200)
    assert.deepEqual(sc.events('worker.crashed'), [])
  } finally {
    assert.equal(await stop(sc), 0)
  }
  assert.equal(sc.events('supervisor.exit').at(-1)?.code, 0)
})

test('identity through ports: the certificate service restarted, then the token service: mutual TLS to ZTS keeps working', async () => {
  const zts = await startZtsDouble()
  const dir = mkdtempSync(join(tmpdir(), 'sia-ports-zts-'))
  const sc = await startReady({
    dataDir: dir,
    env: {
      ...providerEnv(zts),
      ATHENZ_DOMAIN: 'my.team',
      SERVICEACCOUNT: 'api',
      SIA_FAILPOINTS: 'certificate.before-task:refresh-timer=1*crash;token.before-task:refresh-timer=1*crash',
    },
    args: withConfig({ certificate: { restartBackoff: '20ms' }, token: { restartBackoff: '20ms' } }),
  })
  try {
    await sc.waitForEvent('worker.restarted', { service: 'certificate' })
    await sc.waitForEvent('worker.restarted', { service: 'token' })
    const base = sc.records.findLast((r) => r.event === 'server.listening' && r.service === 'token')!
    const res = await fetch(`http://127.0.0.1:${base.port as number}/accesstoken`, {
      method: 'POST',
      body: JSON.stringify({ domain: 'demo', role: 'after-restarts' }),
    })
    assert.equal(res.status, 200, await res.text())
    const oauth = zts.received.filter((r) => r.route === 'oauth2').at(-1)!
    assert.equal(oauth.clientCN, 'my.team.api', 'over mutual TLS with the service identity')
    // The restarted token service asked for it over the port, waiting for a certificate service
    // still restarting; had that call met a worker dying mid-call, the announcement delivers it.
    const tokenCrash = sc.records.findIndex((r) => r.event === 'worker.crashed' && r.service === 'token')
    const unavailable = sc.records.findLastIndex((r) => r.event === 'token.identity.unavailable')
    if (unavailable > tokenCrash) {
      await sc.waitFor((r) => r.event === 'token.identity.updated' && sc.records.indexOf(r) > unavailable)
    }
    assert.equal(await stop(sc), 0)
  } finally {
    // The sidecar first: the double's close waits for the connections it keeps open.
    if (sc.proc.exitCode === null && sc.proc.signalCode === null) await stop(sc, 'SIGKILL')
    await zts.close()
  }
})
