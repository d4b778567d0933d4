import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { eventually } from './eventually.js'
import { freePort } from './ports.js'

export interface RedisServer {
  url: string
  port: number
  proc: ChildProcess
  stop(): Promise<void>
}

/**
 * Starts a private redis-server on `port` (a free loopback one by default; a given one brings a
 * server back where a gateway expects it) and waits until it answers. No persistence, and its
 * working directory is its own: a replica's full sync still writes an RDB file, which must not
 * land in the checkout.
 */
export async function startRedis(port?: number): Promise<RedisServer> {
  port ??= await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'sia-redis-'))
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: 'ignore' },
  )
  const exited = new Promise<void>((r) => proc.once('exit', () => r())).then(() =>
    rmSync(dir, { recursive: true, force: true }),
  )
  try {
    await waitForRedis(port)
  } catch (err) {
    proc.kill('SIGKILL')
    await exited
    throw err
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    proc,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      await exited
    },
  }
}

/** Resolves once the redis-server on `port` answers PING (a cluster node, a Sentinel, a master). */
export function waitForRedis(port: number, password?: string): Promise<void> {
  return eventually(async () => {
    const client = new Redis(port, '127.0.0.1', { password, lazyConnect: true, retryStrategy: () => null })
    client.on('error', () => {})
    try {
      await client.connect()
      return (await client.ping()) === 'PONG' ? true : undefined
    } catch {
      return undefined
    } finally {
      client.disconnect()
    }
  }).then(() => undefined)
}
