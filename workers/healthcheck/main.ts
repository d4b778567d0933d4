import { defineService } from '../../shared/define-service.js'
import { sendJson } from '../../shared/http/problem.js'
import { createServer } from '../../shared/http-builtin.js'
import { liveness, readiness } from '../../shared/readiness.js'

/** Liveness and readiness, answered from the status board with no message round trip. */
defineService({
  async start({ config, board, serve }) {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return sendJson(res, 405, { error: 'method not allowed' }, { allow: 'GET, HEAD' })
      }
      if (path === config.healthCheckEndpoint) {
        const l = liveness(board, config)
        if (l.alive) {
          res.writeHead(200, { 'content-type': 'text/plain' })
          return res.end('OK')
        }
        return sendJson(res, 503, { status: 'stale', stale: l.stale })
      }
      if (path === '/readyz') {
        const r = readiness(board, config)
        return sendJson(res, r.ready ? 200 : 503, {
          status: r.ready ? 'ready' : 'not ready',
          phase: r.phase,
          notReady: r.notReady,
        })
      }
      sendJson(res, 404, { error: 'not found' })
    })
    server.keepAliveTimeout = 5000
    await serve('server', server, config.healthCheckAddr)
  },
})
