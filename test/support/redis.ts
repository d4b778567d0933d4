import { type ChildProcess, spawn } from 'node:child_process'
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
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
  for (let i = 0; i < 100; i++) {
    if (await ping(port)) {
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
    await sleep(50)
  }
  proc.kill('SIGKILL')
  throw new Error(`redis-server did not answer on port ${port}`)
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => s.write('PING\r\n'))
    s.once('data', (d) => {
      s.destroy()
      resolve(d.toString().startsWith('+PONG'))
    })
    s.once('error', () => resolve(false))
  })
}
