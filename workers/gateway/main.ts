import { createServer } from 'node:http'
import { defineService } from '../../shared/define-service.js'
import { sendProblem } from '../../shared/http/problem.js'

/** The AlertManager webhook gateway. */
defineService({
  async start({ config, serve }) {
    const server = createServer((_req, res) => sendProblem(res, { status: 404, title: 'Not Found' }))
    await serve('server', server, config.gatewayAddr)
  },
})
