import { createServer } from 'node:http'
import { defineService } from '../../shared/define-service.js'
import { sendProblem } from '../../shared/http/problem.js'
import { AggregatorRegistry } from '../../shared/prom.js'

const SCRAPE_MARGIN_MS = 1000

/**
 * One exposition for the whole process: the supervisor gathers its own registry and every
 * worker's (each within the scrape deadline), and this service merges them.
 */
defineService({
  async start({ config, log, serve, supervisor }) {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      if (path !== '/metrics') return sendProblem(res, { status: 404, title: 'Not Found' })
      supervisor
        .request('scrape', null, config.metricsScrapeTimeout + SCRAPE_MARGIN_MS)
        .then(async (results) => {
          const merged = AggregatorRegistry.aggregate(results.map((r) => r.metrics))
          const body = await merged.metrics()
          res.writeHead(200, { 'content-type': merged.contentType })
          res.end(body)
        })
        .catch((err: unknown) => {
          log.error({ err }, 'scrape failed')
          sendProblem(res, { status: 503, title: 'Scrape failed', detail: (err as Error).message })
        })
    })
    await serve('server', server, config.metricsServerAddr)
  },
})
