import { Gauge } from 'prom-client'
import { defineService } from '../../shared/define-service.js'
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
      const perWorker: Record<string, { heapUsedBytes: number; heapLimitBytes: number; state: string }> = {}
      for (const w of workers) {
        const s = board.sample(w)
        perWorker[w] = { heapUsedBytes: s.heapUsedBytes, heapLimitBytes: s.heapLimitBytes, state: s.state }
        heapUsed.set({ worker: w }, s.heapUsedBytes)
        heapLimit.set({ worker: w }, s.heapLimitBytes)
      }
      log.info({ event: 'memory.report', rssBytes, workers: perWorker }, 'memory report')
    }
    await go(
      'reporter',
      timerTask(() => config.memoryReportInterval, report),
    )
  },
})
