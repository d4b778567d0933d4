import { createServer, type ServerResponse } from 'node:http'
import { defineService } from '../../shared/define-service.js'
import { sendProblem } from '../../shared/http/problem.js'
import { AggregatorRegistry, Gauge } from '../../shared/prom.js'
import type { ScrapeResult } from '../../shared/protocol.js'
import { readiness } from '../../shared/readiness.js'
import { buildStatus } from './status.js'
import { refreshSeconds, renderStatusPage, STATUS_PAGE_CSP } from './status-page.js'

const SCRAPE_MARGIN_MS = 1000

/**
 * One exposition for the whole process: the supervisor gathers its own registry and every
 * worker's (each within the scrape deadline), and this service merges them. The status page
 * (`/status`, `/status.json`) is made of one such scrape and the status board.
 */
defineService({
  async start({ config, log, serve, supervisor, registry, board }) {
    new Gauge({
      name: 'sia_ready',
      help: '1 while GET /readyz answers 200 (every enabled service running, not shutting down)',
      registers: [registry],
      collect() {
        this.set(readiness(board, config).ready ? 1 : 0)
      },
    })
    const scrape = () => supervisor.request('scrape', null, config.metricsScrapeTimeout + SCRAPE_MARGIN_MS)
    // Each series comes from one registry, so nothing needs aggregating across them; prom-client
    // marks process_start_time_seconds 'omit' (for its cluster mode), which would drop it.
    const merge = (results: ScrapeResult[]) =>
      AggregatorRegistry.aggregate(
        results.map((r) =>
          r.metrics.map((m) => (m.aggregator === 'omit' ? { ...m, aggregator: 'first' as const } : m)),
        ),
      )

    const failed = (res: ServerResponse, err: unknown) => {
      log.error({ err }, 'scrape failed')
      sendProblem(res, { status: 503, title: 'Scrape failed', detail: (err as Error).message })
    }

    const status = async (results: ScrapeResult[]) => {
      const supervisorResult = results.find((r) => r.source === 'supervisor')
      return buildStatus({
        config,
        board,
        metrics: await merge(results).getMetricsAsJSON(),
        upServices: new Set(results.filter((r) => r.source !== 'supervisor' && r.up).map((r) => r.source)),
        lastErrors: supervisorResult?.lastErrors ?? {},
      })
    }

    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost')
      const path = url.pathname
      if (path === '/metrics') {
        scrape()
          .then(async (results) => {
            const merged = merge(results)
            const body = await merged.metrics()
            res.writeHead(200, { 'content-type': merged.contentType })
            res.end(body)
          })
          .catch((err: unknown) => failed(res, err))
        return
      }
      if (path === '/status' || path === '/status.json') {
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          return sendProblem(res, { status: 405, title: 'Method Not Allowed' }, { allow: 'GET, HEAD' })
        }
        scrape()
          .then(status)
          .then((view) => {
            const headers = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }
            if (path === '/status.json') {
              res.writeHead(200, { ...headers, 'content-type': 'application/json; charset=utf-8' })
              res.end(`${JSON.stringify(view, null, 2)}\n`)
              return
            }
            const refresh = refreshSeconds(url.search)
            res.writeHead(200, {
              ...headers,
              'content-type': 'text/html; charset=utf-8',
              'content-security-policy': STATUS_PAGE_CSP,
              'referrer-policy': 'no-referrer',
              'x-frame-options': 'DENY',
            })
            res.end(req.method === 'HEAD' ? undefined : renderStatusPage(view, refresh))
          })
          .catch((err: unknown) => failed(res, err))
        return
      }
      sendProblem(res, { status: 404, title: 'Not Found' })
    })
    await serve('server', server, config.metricsServerAddr)
  },
})
