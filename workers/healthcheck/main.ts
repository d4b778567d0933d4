import { defineService } from '../../shared/define-service.js'
import { sendJson, sendProblem } from '../../shared/http/problem.js'
import { targetPath } from '../../shared/http/target.js'
import { closeUnread } from '../../shared/http/unread-body.js'
import { createServer } from '../../shared/http-builtin.js'
import { liveness, readiness } from '../../shared/readiness.js'

/** Liveness and readiness, answered from the status board with no message round trip. */
defineService({
  async start({ config, board, serve }) {
    const server = createServer((req, res) => {
      const path = targetPath(req.url)
      closeUnread(req, res) // probes send no body: one sent is not read
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return sendProblem(res, { status: 405, title: 'Method Not Allowed' }, { allow: 'GET, HEAD' })
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
      sendProblem(res, { status: 404, title: 'Not Found', detail: `no route for ${req.method} ${req.url}` })
    })
    server.keepAliveTimeout = 5000
    await serve('server', server, config.healthCheckAddr)
  },
})
