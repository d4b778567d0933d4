import type { ServerResponse } from 'node:http'
// Only this worker merges registries: the other threads' bundles leave prom-client's cluster file out.
import AggregatorRegistry from 'prom-client/lib/cluster.js'
import { monotonicMs } from '../../shared/clock.js'
import { defineService } from '../../shared/define-service.js'
import { sendProblem } from '../../shared/http/problem.js'
import { closeUnread } from '../../shared/http/unread-body.js'
import { createServer } from '../../shared/http-builtin.js'
import type { Target } from '../../shared/ports/apis.js'
import { Gauge } from '../../shared/prom.js'
import type { MetricsJson } from '../../shared/protocol.js'
import { readiness } from '../../shared/readiness.js'
import { SERVICES } from '../../shared/services.js'
import { buildStatus } from './status.js'
import { refreshSeconds, renderStatusPage, STATUS_PAGE_CSP } from './status-page.js'

/** What one scrape gathered: each registry that answered, and who did not. */
interface Gathered {
  registries: MetricsJson[]
  up: Set<string>
}

/**
 * One exposition for the whole process: this service asks the supervisor and every other worker
 * for its registry directly, over the service ports, all at once and each within
 * METRICS_SCRAPE_TIMEOUT, and merges them. A worker that is down or does not answer in time is
 * `sia_worker_up 0`, never a failed scrape. The status page (`/status`, `/status.json`) is made of
 * one such scrape and the status board.
 */
defineService({
  async start({ config, log, serve, connect, registry, collect, board }) {
    new Gauge({
      name: 'sia_ready',
      help: '1 while GET /readyz answers 200 (every enabled service running, not shutting down)',
      registers: [registry],
      collect() {
        this.set(readiness(board, config).ready ? 1 : 0)
      },
    })
    const within = { timeoutMs: config.metricsScrapeTimeout }
    const supervisor = connect('supervisor', within)
    const others = SERVICES.filter((s) => s !== 'metrics' && config.services[s].enabled)
    type Collect = { collect(view: boolean, answerBy: number): Promise<MetricsJson> }
    const targets: [Target, Collect][] = [
      ['supervisor', supervisor],
      ...others.map((s): [Target, Collect] => [s, connect(s, within)]),
    ]

    /** Every registry: for a scrape, or (`view`) for the status page, which starts no new period. */
    const gather = async (view: boolean): Promise<Gathered> => {
      const answerBy = monotonicMs() + config.metricsScrapeTimeout
      const answers = await Promise.all(
        targets.map(async ([target, port]) => {
          try {
            return { target, metrics: await port.collect(view, answerBy) }
          } catch (err) {
            log.debug({ event: 'metrics.collect.failed', target, err }, `${target} did not answer the scrape`)
            return { target, metrics: undefined }
          }
        }),
      )
      const up = new Set<string>(
        answers.filter((a) => a.metrics && a.target !== 'supervisor').map((a) => a.target),
      )
      up.add('metrics')
      // In the shape a registry's getMetricsAsJSON() gives, so it merges like the others.
      const upSeries = [
        {
          name: 'sia_worker_up',
          help: '1 if the worker answered the last scrape in time',
          type: 'gauge',
          aggregator: 'sum',
          values: [...others, 'metrics'].map((service) => ({
            labels: { service },
            value: up.has(service) ? 1 : 0,
          })),
        },
      ] as unknown as MetricsJson
      return {
        registries: [
          ...answers.flatMap((a) => (a.metrics ? [a.metrics] : [])),
          await collect(view),
          upSeries,
        ],
        up,
      }
    }
    // Scrapes that arrive while one is being gathered share it: a flood of scrapes over many
    // connections (each bounded by shared/http/connections.ts) costs one gather at a time, not one
    // each, every registry of every thread in this heap at once. Two scrapers at the same instant
    // get the same figures; the status page's view is gathered apart from a scrape.
    const singleFlight = <T>(make: (view: boolean) => Promise<T>) => {
      const inFlight = new Map<boolean, Promise<T>>()
      return (view: boolean): Promise<T> => {
        let pending = inFlight.get(view)
        if (!pending) {
          pending = make(view).finally(() => inFlight.delete(view))
          inFlight.set(view, pending)
        }
        return pending
      }
    }
    // Each series comes from one registry, so nothing needs aggregating across them; prom-client
    // marks process_start_time_seconds 'omit' (for its cluster mode), which would drop it.
    const merge = (g: Gathered) =>
      AggregatorRegistry.aggregate(
        g.registries.map((r) =>
          r.map((m) => (m.aggregator === 'omit' ? { ...m, aggregator: 'first' as const } : m)),
        ),
      )
    /** The exposition, rendered once for every scrape that shares its gather. */
    const exposition = singleFlight(async (view) => {
      const merged = merge(await gather(view))
      return { contentType: merged.contentType, body: await merged.metrics() }
    })
    const failed = (res: ServerResponse, err: unknown) => {
      log.error({ err }, 'scrape failed')
      sendProblem(res, { status: 503, title: 'Scrape failed', detail: (err as Error).message })
    }
    /**
     * The status view, built once for every request that shares its gather, with its JSON and
     * each page (by refresh) rendered once: built per request, a flood of /status.json (16 a
     * connection, 700 connections) ended the thread out of heap, and repeated, the sidecar.
     */
    const statusView = singleFlight(async () => {
      const g = await gather(true)
      const view = await buildStatus({
        config,
        board,
        metrics: await merge(g).getMetricsAsJSON(),
        upServices: g.up,
        lastErrors: await supervisor.lastErrors().catch(() => ({})),
      })
      const pages = new Map<number, string>()
      return {
        json: `${JSON.stringify(view, null, 2)}\n`,
        page(refresh: number) {
          const html = pages.get(refresh) ?? renderStatusPage(view, refresh)
          pages.set(refresh, html)
          return html
        },
      }
    })

    const server = createServer((req, res) => {
      closeUnread(req, res) // a scrape sends no body: one sent is not read
      // A request target Node accepts but that is no path here (`//`, `http://a:99999/`): `new URL`
      // would throw in the handler, and an exception there ends the thread.
      const url = URL.parse(req.url ?? '/', 'http://localhost')
      if (!url) {
        return sendProblem(res, {
          status: 400,
          title: 'Bad Request',
          detail: 'the request target is not a path',
        })
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return sendProblem(res, { status: 405, title: 'Method Not Allowed' }, { allow: 'GET, HEAD' })
      }
      const path = url.pathname
      if (path === '/metrics') {
        // A HEAD is no scrape: it must not reset what the next scrape reports since the last.
        exposition(req.method === 'HEAD')
          .then(({ contentType, body }) => {
            res.writeHead(200, { 'content-type': contentType })
            res.end(body)
          })
          .catch((err: unknown) => failed(res, err))
        return
      }
      if (path === '/status' || path === '/status.json') {
        statusView(true)
          .then((built) => {
            const headers = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }
            if (path === '/status.json') {
              res.writeHead(200, { ...headers, 'content-type': 'application/json; charset=utf-8' })
              res.end(built.json)
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
            res.end(req.method === 'HEAD' ? undefined : built.page(refresh))
          })
          .catch((err: unknown) => failed(res, err))
        return
      }
      sendProblem(res, { status: 404, title: 'Not Found' })
    })
    await serve('server', server, config.metricsServerAddr)
  },
})
