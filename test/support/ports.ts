import { createServer, type Server } from 'node:net'

/**
 * Ports for servers that cannot take port 0 (redis-server) or must not (a sidecar's ports, shared
 * by a successor or held across a crash). Test files run in parallel, so a port that was merely
 * free a moment ago may be handed to two of them — and two sidecars with SO_REUSEPORT would both
 * bind it. Each port is therefore taken from below the kernel's ephemeral range (where no port-0
 * server or outgoing connection lands) and claimed for the life of this test process with an
 * abstract socket of its own name, which no other test process can bind.
 */
const FIRST = 20_000
const LAST = 32_767

function tryListen(
  server: Server,
  options: { host?: string; port?: number; path?: string },
): Promise<boolean> {
  return new Promise((resolve) => {
    server.once('error', () => resolve(false))
    server.listen(options, () => resolve(true))
  })
}

export async function freePort(): Promise<number> {
  for (;;) {
    const port = FIRST + Math.floor(Math.random() * (LAST - FIRST + 1))
    // The claim stays open (unreferenced) until this process ends.
    const claim = createServer()
    if (!(await tryListen(claim, { path: `\0sia-test/tcp/${port}` }))) continue
    claim.unref()
    const probe = createServer()
    if (await tryListen(probe, { host: '127.0.0.1', port })) {
      await new Promise((r) => probe.close(r))
      return port
    }
    claim.close()
  }
}

/**
 * Every server of the sidecar on a port of its own, as production runs it: a real port can be
 * shared by a successor or held across a crash (port 0 never is).
 */
export async function serverPorts(): Promise<{
  token: number
  gateway: number
  metrics: number
  health: number
  env: Record<string, string>
}> {
  const token = await freePort()
  const gateway = await freePort()
  const metrics = await freePort()
  const health = await freePort()
  return {
    token,
    gateway,
    metrics,
    health,
    env: {
      TOKEN_SERVER_ADDR: `127.0.0.1:${token}`,
      GATEWAY_ADDR: `127.0.0.1:${gateway}`,
      METRICS_SERVER_ADDR: `127.0.0.1:${metrics}`,
      HEALTH_CHECK_ADDR: `127.0.0.1:${health}`,
    },
  }
}
