import { createServer } from 'node:net'

/** A port that was free a moment ago, for servers (like redis-server) that cannot take port 0. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

/**
 * Every server of the sidecar on a port of its own that was free a moment ago, as production runs
 * it: a real port can be shared by a successor or held across a crash (port 0 never is).
 */
export async function serverPorts(): Promise<{
  token: number
  gateway: number
  metrics: number
  health: number
  env: Record<string, string>
}> {
  const [token, gateway, metrics, health] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ])
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
