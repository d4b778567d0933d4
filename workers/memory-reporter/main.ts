import { defineService } from '../../shared/define-service.js'
import { Gauge } from '../../shared/prom.js'
import { type WorkerVitals, workerVitals } from '../../shared/readiness.js'
import { SERVICES } from '../../shared/services.js'
import { timerTask } from '../../shared/timer-task.js'

/** Every MEMORY_REPORT_INTERVAL: one record with process RSS and each worker's heap, and gauges. */
defineService({
  async start({ config, board, log, registry, go }) {
    const workers = SERVICES.filter((s) => config.services[s].enabled)
    // The gauges are read at each scrape, the record is logged every interval: a scrape before
    // the first report (or with MEMORY_REPORT_INTERVAL=0) is not a 0, and a worker that has died
    // since the last report is not reported on its last figures.
    new Gauge({
      name: 'memory_report_rss_bytes',
      help: 'Process resident set size',
      registers: [registry],
      collect() {
        this.set(process.memoryUsage.rss())
      },
    })
    // As sia_worker_heap_*: a worker whose loop is blocked has no heap figure (its last beat's is
    // from before the block).
    const liveWorkers = (read: (v: WorkerVitals) => number | undefined) =>
      function (this: Gauge<'worker'>) {
        this.reset()
        for (const worker of workers) {
          const vitals = workerVitals(board, config, worker)
          const value = vitals && read(vitals)
          if (value !== undefined) this.set({ worker }, value)
        }
      }
    new Gauge({
      name: 'memory_report_heap_used_bytes',
      help: 'V8 heap used by each worker whose thread is up',
      labelNames: ['worker'],
      registers: [registry],
      collect: liveWorkers((s) => s.heapUsedBytes),
    })
    new Gauge({
      name: 'memory_report_heap_limit_bytes',
      help: 'V8 heap limit of each worker whose thread is up',
      labelNames: ['worker'],
      registers: [registry],
      collect: liveWorkers((s) => s.heapLimitBytes),
    })
    const report = () => {
      const rssBytes = process.memoryUsage.rss()
      // A list, not a map keyed by service: a key named `token` would be caught by log redaction.
      const perWorker = workers.map((worker) => {
        const { heapUsedBytes, heapLimitBytes, state } = board.sample(worker)
        return { worker, state, heapUsedBytes, heapLimitBytes }
      })
      log.info({ event: 'memory.report', rssBytes, workers: perWorker }, 'memory report')
    }
    await go(
      'reporter',
      timerTask(() => config.memoryReportInterval, report),
    )
  },
})
