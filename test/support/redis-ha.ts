import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { eventually } from './eventually.js'
import { freePort } from './ports.js'
import { waitForRedis } from './redis.js'
import { type RedisProxy, startRedisProxy } from './redis-proxy.js'

const run = promisify(execFile)

/** A group of redis-server processes (plain, Sentinel or Cluster nodes) stopped together. */
export interface RedisGroup {
  ports: number[]
  /** A client on one server (with the group's password), closed by stop(). */
  client(port: number): Redis
  /**
   * The server on `port` stops (SIGSTOP): its connections stay open and its kernel still accepts
   * new ones, but nothing is answered (a hung process, a node behind a lost link); resume() goes on.
   */
  pause(port: number): void
  resume(port: number): void
  stop(): Promise<void>
}

interface Spawned {
  port: number
  proc: ChildProcess
  exited: Promise<void>
}

function group(dir: string, password: string) {
  const procs: Spawned[] = []
  const clients: Redis[] = []
  return {
    procs,
    async spawn(port: number, args: string[]): Promise<void> {
      const proc = spawn('redis-server', args, { stdio: 'ignore', cwd: dir })
      const exited = new Promise<void>((r) => proc.once('exit', () => r()))
      procs.push({ port, proc, exited })
      await waitForRedis(port, password)
    },
    client(port: number): Redis {
      const c = new Redis(port, '127.0.0.1', { password, maxRetriesPerRequest: 1 })
      c.on('error', () => {})
      clients.push(c)
      return c
    },
    pause: (port: number) => void procs.find((p) => p.port === port)?.proc.kill('SIGSTOP'),
    resume: (port: number) => void procs.find((p) => p.port === port)?.proc.kill('SIGCONT'),
    async stop(): Promise<void> {
      for (const c of clients) c.disconnect()
      for (const p of procs) {
        if (p.proc.exitCode !== null || p.proc.signalCode !== null) continue
        p.proc.kill('SIGCONT') // a paused server would not end on SIGTERM
        p.proc.kill('SIGTERM')
      }
      await Promise.all(procs.map((p) => p.exited))
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

const NO_PERSISTENCE = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']

/**
 * A master with `password` and one Sentinel (the redis-server binary in sentinel mode) that
 * monitors it as `name` and asks for `sentinelPassword` from its own clients. ports: [master, sentinel].
 */
export async function startSentinel(opts: {
  name: string
  password: string
  sentinelPassword: string
}): Promise<RedisGroup> {
  const dir = mkdtempSync(join(tmpdir(), 'sia-sentinel-'))
  const g = group(dir, opts.password)
  try {
    const [master = 0, sentinel = 0] = await freePorts(2)
    await g.spawn(master, ['--port', String(master), ...NO_PERSISTENCE, '--requirepass', opts.password])
    const conf = join(dir, 'sentinel.conf')
    writeFileSync(
      conf,
      [
        `port ${sentinel}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        'sentinel resolve-hostnames no',
        `requirepass ${opts.sentinelPassword}`,
        `sentinel monitor ${opts.name} 127.0.0.1 ${master} 1`,
        `sentinel auth-pass ${opts.name} ${opts.password}`,
        '',
      ].join('\n'),
    )
    const sg = group(dir, opts.sentinelPassword)
    await sg.spawn(sentinel, [conf, '--sentinel'])
    g.procs.push(...sg.procs)
    const s = sg.client(sentinel)
    try {
      await eventually(async () => {
        const addr = (await s.call('SENTINEL', 'get-master-addr-by-name', opts.name)) as string[] | null
        return addr?.[1] === String(master) ? addr : undefined
      })
    } finally {
      s.disconnect()
    }
    return { ports: [master, sentinel], client: g.client, pause: g.pause, resume: g.resume, stop: g.stop }
  } catch (err) {
    await g.stop()
    throw err
  }
}

/** `size` masters (no replicas) forming a Redis Cluster with `password`, once cluster_state is ok. */
export async function startCluster(opts: { size: number; password: string }): Promise<RedisGroup> {
  const dir = mkdtempSync(join(tmpdir(), 'sia-cluster-'))
  const g = group(dir, opts.password)
  try {
    const all = await freePorts(2 * opts.size)
    const [ports, busPorts] = [all.slice(0, opts.size), all.slice(opts.size)]
    await Promise.all(
      ports.map(async (port, i) =>
        g.spawn(port, [
          '--port',
          String(port),
          ...NO_PERSISTENCE,
          '--requirepass',
          opts.password,
          '--masterauth',
          opts.password,
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          // The default bus port is port+10000, which may be taken or past 65535.
          '--cluster-port',
          String(busPorts[i]),
        ]),
      ),
    )
    await run('redis-cli', [
      '-a',
      opts.password,
      '--no-auth-warning',
      '--cluster',
      'create',
      ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ])
    for (const port of ports) {
      const c = g.client(port)
      await eventually(async () =>
        ((await c.call('CLUSTER', 'INFO')) as string).includes('cluster_state:ok') ? true : undefined,
      )
    }
    return { ports, client: g.client, pause: g.pause, resume: g.resume, stop: g.stop }
  } catch (err) {
    await g.stop()
    throw err
  }
}

/**
 * A proxy in front of each node of `cluster` (in the order of its ports), each node announcing its
 * proxy's port, once every node's slot map says so: a cluster client, seeded with a proxy, reaches
 * every node through one, and a proxy's traps (a lost reply) strike its data connections.
 */
export async function proxyCluster(cluster: RedisGroup): Promise<RedisProxy[]> {
  const proxies: RedisProxy[] = []
  try {
    for (const port of cluster.ports) proxies.push(await startRedisProxy(port))
    for (const [i, port] of cluster.ports.entries()) {
      await cluster.client(port).config('SET', 'cluster-announce-port', String(proxies[i]!.port))
    }
    const announced = new Set(proxies.map((p) => p.port))
    for (const port of cluster.ports) {
      const c = cluster.client(port)
      await eventually(async () => {
        const slots = (await c.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][]
        return slots.every(([, , [, p]]) => announced.has(Number(p))) ? true : undefined
      })
    }
    return proxies
  } catch (err) {
    await Promise.all(proxies.map((p) => p.close()))
    throw err
  }
}

/** `n` distinct ports that were free a moment ago. */
async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>()
  while (ports.size < n) ports.add(await freePort())
  return [...ports]
}
