import type { BodyBudget } from '../../shared/http/body-budget.js'
import { Counter, Gauge, Histogram, type Registry } from '../../shared/prom.js'
import type { GatewayHealth } from './health.js'

export interface GatewayMetrics {
  received: Counter<'status'>
  created: Counter
  deduplicated: Counter
  rejected: Counter
  requests: Counter<'code'>
  duration: Histogram
  inflight: Gauge
  shed: Counter
  truncated: Counter
  sinkErrors: Counter<'sink'>
}

/** The gateway_* series of the issue, in the worker's registry (labelled service="gateway"). */
export function createMetrics(
  registry: Registry,
  health: GatewayHealth,
  budget: BodyBudget,
  sinkName: string,
): GatewayMetrics {
  const registers = [registry]
  new Gauge({
    name: 'gateway_body_bytes_buffered',
    help: 'Request body bytes held now, arriving or being stored (bounded by GATEWAY_MAX_BUFFERED_BYTES)',
    registers,
    collect() {
      this.set(budget.used())
    },
  })
  new Gauge({
    name: 'gateway_sink_up',
    help: 'Whether the sink takes writes (0 from a failed write until a write or a probe succeeds)',
    registers,
    collect() {
      this.set(health.sinkUp() ? 1 : 0)
    },
  })
  new Gauge({
    name: 'gateway_dedup_store_up',
    help: 'Whether the dedup store takes writes (0 while Redis is unreachable, and from a failed batch until a write probe goes through)',
    registers,
    collect() {
      this.set(health.storeUp() ? 1 : 0)
    },
  })
  // At 0 from the start: Prometheus's increase() cannot see a series' first step from nothing.
  const sinkErrors = new Counter({
    name: 'gateway_sink_errors_total',
    help: 'Failed sink writes (the request got 503; the dedup records of what was not stored were released)',
    labelNames: ['sink'],
    registers,
  })
  sinkErrors.inc({ sink: sinkName }, 0)
  const received = new Counter({
    name: 'gateway_signals_received_total',
    help: 'Alerts received, by alert status',
    labelNames: ['status'],
    registers,
  })
  for (const status of ['firing', 'resolved']) received.inc({ status }, 0)
  return {
    received,
    created: new Counter({
      name: 'gateway_signals_created_total',
      help: 'Alerts that were new and written to the sink',
      registers,
    }),
    rejected: new Counter({
      name: 'gateway_signals_rejected_total',
      help: 'Alerts the sink refused for what they hold (each logged whole as gateway.sink.rejected)',
      registers,
    }),
    deduplicated: new Counter({
      name: 'gateway_signals_deduplicated_total',
      help: 'Alerts that were duplicates within the dedup TTL',
      registers,
    }),
    requests: new Counter({
      name: 'gateway_requests_total',
      help: 'Webhook requests, by HTTP status code',
      labelNames: ['code'],
      registers,
    }),
    duration: new Histogram({
      name: 'gateway_request_duration_seconds',
      help: 'Webhook request duration',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    inflight: new Gauge({
      name: 'gateway_inflight_requests',
      help: 'Webhook requests being ingested (body received, dedup and sink under way)',
      registers,
    }),
    truncated: new Counter({
      name: 'gateway_signals_truncated_total',
      help: 'Alerts AlertManager left out of its notifications (truncatedAlerts, max_alerts): never sent, never stored',
      registers,
    }),
    shed: new Counter({
      name: 'gateway_bodies_shed_total',
      help: 'Request bodies cut off with 503 because GATEWAY_MAX_BUFFERED_BYTES was reached',
      registers,
    }),
    sinkErrors,
  }
}
