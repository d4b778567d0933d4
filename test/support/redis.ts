import { type ChildProcess, spawn } from 'node:child_process'
import { Redis } from 'ioredis'
import { eventually } from './eventually.js'
import { freePort } from './ports.js'

export interface RedisServer {
  url: string
  port: number
  proc: ChildProcess
  stop(): Promise<void>
}

/** Starts a private redis-server on a free loopback port (no persistence) and waits until it answers. */
export async function startRedis(): Promise<RedisServer> {
  const port = await freePort()
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  )
  const exited = new Promise<void>((r) => proc.once('exit', () => r()))
  try {
    await waitForRedis(port)
  } catch (err) {
    proc.kill('SIGKILL')
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
