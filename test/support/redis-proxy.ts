import { connect, createServer, type Socket } from 'node:net'

export interface RedisProxy {
  port: number
  /**
   * The next command whose bytes contain `marker` reaches Redis and runs, but its reply is dropped
   * and the client's connection closed, as a reset between a client and Redis does. A `-NOSCRIPT`
   * reply (ioredis then sends the script itself) is passed on and the trap stays set.
   */
  loseNextReply(marker: string): Promise<void>
  /** Connections made from now on go to the Redis on `port` (a failover behind one address). */
  retarget(port: number): void
  /**
   * The connections open now go silent both ways, with no FIN or reset (a Redis node lost, a
   * partition, a hung proxy); new ones reach Redis as before (a replacement behind the address).
   */
  freezeOpen(): void
  close(): Promise<void>
}

/** A TCP proxy in front of a real Redis, on a port of its own. */
export async function startRedisProxy(redisPort: number): Promise<RedisProxy> {
  let trap: { marker: string; sprung: () => void } | undefined
  const sockets = new Set<Socket>()
  let target = redisPort
  const frozen = new WeakSet<Socket>()
  const open = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1')
    open.add(client)
    client.once('close', () => open.delete(client))
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.once('close', () => sockets.delete(s))
      s.on('error', () => {})
    }
    let armed: typeof trap
    client.on('data', (chunk) => {
      if (frozen.has(client)) return
      if (trap && chunk.includes(trap.marker)) {
        armed = trap
        trap = undefined
      }
      upstream.write(chunk)
    })
    upstream.on('data', (chunk) => {
      if (frozen.has(client)) return
      if (!armed || chunk.subarray(0, 9).toString() === '-NOSCRIPT') return void client.write(chunk)
      const sprung = armed.sprung
      armed = undefined
      client.destroy()
      upstream.destroy()
      sprung()
    })
    client.once('close', () => upstream.destroy())
    upstream.once('close', () => client.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    port,
    retarget: (port) => {
      target = port
    },
    freezeOpen: () => {
      for (const c of open) frozen.add(c)
    },
    loseNextReply: (marker) =>
      new Promise<void>((sprung) => {
        trap = { marker, sprung }
      }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
