import { createServer } from 'node:http'
import { defineService } from '../../shared/define-service.js'
import { sendProblem } from '../../shared/http/problem.js'
import type { Target } from '../../shared/ports/apis.js'
import { AggregatorRegistry } from '../../shared/prom.js'
import type { MetricsJson } from '../../shared/protocol.js'
import { SERVICES } from '../../shared/services.js'

/**
 * One exposition for the whole process: this service asks the supervisor and every other worker
 * for its registry directly, over the service ports, all at once and each within
 * METRICS_SCRAPE_TIMEOUT, and merges them. A worker that is down or does not answer in time is
 * `sia_worker_up 0`, never a failed scrape.
 */
defineService({
  async start({ config, log, serve, connect, registry }) {
    const others = SERVICES.filter((s) => s !== 'metrics' && config.services[s].enabled)
    const targets: [Target, { collect(): Promise<MetricsJson> }][] = [
      ['supervisor', connect('supervisor', { timeoutMs: config.metricsScrapeTimeout })],
      ...others.map(
        (s) =>
          [s, connect(s, { timeoutMs: config.metricsScrapeTimeout })] as [
            Target,
            { collect(): Promise<MetricsJson> },
          ],
      ),
    ]
    const scrape = async (): Promise<MetricsJson[]> => {
      const answers = await Promise.all(
        targets.map(async ([target, port]) => {
          try {
            return { target, metrics: await port.collect() }
          } catch (err) {
            log.debug({ event: 'metrics.collect.failed', target, err }, `${target} did not answer the scrape`)
            return { target, metrics: undefined }
          }
        }),
      )
      // In the shape a registry's getMetricsAsJSON() gives, so it merges like the others.
      const up = [
        {
          name: 'sia_worker_up',
          help: '1 if the worker answered the last scrape in time',
          type: 'gauge',
          aggregator: 'sum',
          values: [
            ...answers
              .filter((a) => a.target !== 'supervisor')
              .map((a) => ({ labels: { service: a.target }, value: a.metrics ? 1 : 0 })),
            { labels: { service: 'metrics' }, value: 1 },
          ],
        },
      ] as unknown as MetricsJson
      return [
        ...answers.flatMap((a) => (a.metrics ? [a.metrics] : [])),
        await registry.getMetricsAsJSON(),
        up,
      ]
    }
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      if (path !== '/metrics') return sendProblem(res, { status: 404, title: 'Not Found' })
      scrape()
        .then(async (registries) => {
          const merged = AggregatorRegistry.aggregate(registries)
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
