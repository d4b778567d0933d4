import { randomUUID } from 'node:crypto'
import autocannon from 'autocannon'

/**
 * The load generator, in its own process so it never shares an event loop with what it measures.
 * Receives one job over IPC, answers with the figures, exits.
 */
export interface LoadJob {
  url: string
  connections: number
  durationSec: number
  method: 'GET' | 'POST'
  headers?: Record<string, string>
  body?: string
  /** Each request gets a fresh alert fingerprint (gateway: no duplicates). */
  uniqueAlert?: boolean
  /** With `uniqueAlert`: alerts in each batch (default 1). */
  alertsPerRequest?: number
}

export interface LoadResult {
  reqPerSec: number
  p50Ms: number
  p99Ms: number
  total: number
  non2xx: number
  errors: number
}

export function alertPayload(fingerprint: string, alerts = 1): string {
  return JSON.stringify({
    version: '4',
    groupKey: 'bench',
    status: 'firing',
    receiver: 'sia',
    groupLabels: {},
    commonLabels: {},
    commonAnnotations: {},
    externalURL: 'http://alertmanager',
    alerts: Array.from({ length: alerts }, (_, i) => {
      const id = alerts === 1 ? fingerprint : `${fingerprint}${i.toString(16).padStart(4, '0')}`
      return {
        status: 'firing',
        labels: { alertname: 'Bench', namespace: 'bench', severity: 'warning', id },
        annotations: { summary: 'bench' },
        startsAt: new Date().toISOString(),
        endsAt: '0001-01-01T00:00:00Z',
        generatorURL: 'http://prometheus',
        fingerprint: id,
      }
    }),
  })
}

process.once('message', async (job: LoadJob) => {
  const result = await autocannon({
    url: job.url,
    connections: job.connections,
    duration: job.durationSec,
    requests: [
      {
        method: job.method,
        headers: job.headers ?? {},
        ...(job.body ? { body: job.body } : {}),
        ...(job.uniqueAlert
          ? {
              setupRequest: (req) => ({
                ...req,
                body: alertPayload(randomUUID().replaceAll('-', ''), job.alertsPerRequest),
              }),
            }
          : {}),
      },
    ],
  })
  const out: LoadResult = {
    reqPerSec: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    total: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
  }
  process.send!(out, () => process.exit(0))
})
