import { defineService } from '../../shared/define-service.js'
import { Gauge } from '../../shared/prom.js'
import { SERVICES } from '../../shared/services.js'
import { timerTask } from '../../shared/timer-task.js'

/** Every MEMORY_REPORT_INTERVAL: one record with process RSS and each worker's heap, and gauges. */
defineService({
  async start({ config, board, log, registry, go }) {
    const workers = SERVICES.filter((s) => config.services[s].enabled)
    const rss = new Gauge({
      name: 'memory_report_rss_bytes',
      help: 'Process resident set size at the last report',
      registers: [registry],
    })
    const heapUsed = new Gauge({
      name: 'memory_report_heap_used_bytes',
      help: 'Worker heap used at the last report',
      labelNames: ['worker'],
      registers: [registry],
    })
    const heapLimit = new Gauge({
      name: 'memory_report_heap_limit_bytes',
      help: 'Worker heap limit at the last report',
      labelNames: ['worker'],
      registers: [registry],
    })
    const report = () => {
      const rssBytes = process.memoryUsage.rss()
      rss.set(rssBytes)
      // A list, not a map keyed by service: a key named `token` would be caught by log redaction.
      const perWorker = workers.map((worker) => {
        const { heapUsedBytes, heapLimitBytes, state } = board.sample(worker)
        heapUsed.set({ worker }, heapUsedBytes)
        heapLimit.set({ worker }, heapLimitBytes)
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
