import { monotonicMs } from '../../shared/clock.js'
import { quoted } from '../../shared/log-quote.js'
import type { Logger } from '../../shared/logger.js'
import type { Counter } from '../../shared/prom.js'
import type { Webhook } from './payload.js'

/** How often, at most, the gateway says AlertManager left alerts out. */
const SAY_EVERY_MS = 60_000

/**
 * Alerts AlertManager left out of a notification (`truncatedAlerts`: a receiver with `max_alerts`
 * set, and a group larger than it) were never sent: no retry brings them, and a 2xx cannot vouch
 * for them. Once a notification is taken (2xx), they are counted
 * (`gateway_signals_truncated_total`), said in the answer, and logged
 * at most once a minute (`gateway.alerts.truncated`, with the count since the last line), so a
 * group truncated on every notification does not flood the log. Returns the batch's count.
 */
export function truncationNotes(counter: Counter, log: Logger): (webhook: Webhook) => number {
  let unsaid = 0
  let saidAt = Number.NEGATIVE_INFINITY
  return (webhook) => {
    const n = webhook.truncatedAlerts ?? 0
    if (n === 0) return 0
    counter.inc(n)
    unsaid += n
    if (monotonicMs() - saidAt >= SAY_EVERY_MS) {
      saidAt = monotonicMs()
      log.warn(
        {
          event: 'gateway.alerts.truncated',
          count: unsaid,
          groupKey: webhook.groupKey && quoted(webhook.groupKey),
          receiver: webhook.receiver && quoted(webhook.receiver),
        },
        'AlertManager left alerts out of a notification (max_alerts): they were never sent, so never stored; set max_alerts: 0',
      )
      unsaid = 0
    }
    return n
  }
}
