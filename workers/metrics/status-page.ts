import type { ServiceName } from '../../shared/services.js'
import type { StatusView, WorkerStatus } from './status.js'

/**
 * The status page: one server-rendered HTML document, no script, no external asset (the style is
 * inline, the bars are <meter> elements), reloaded by the browser every `refreshSeconds` through a
 * meta refresh. Every value is HTML-escaped, whatever its source.
 */
export const DEFAULT_REFRESH_SECONDS = 5

/** What the page may load: nothing but its own inline style. */
export const STATUS_PAGE_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
}

export function escapeHtml(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c)
}

/** `?refresh=N` (seconds, 0: never); out-of-range or invalid values fall back to the default. */
export function refreshSeconds(search: string): number {
  const raw = new URLSearchParams(search).get('refresh')
  if (raw === null || !/^\d{1,4}$/.test(raw)) return DEFAULT_REFRESH_SECONDS
  return Math.min(3600, Number(raw))
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = 0
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—'
  const sign = seconds < 0 ? '-' : ''
  let s = Math.abs(Math.round(seconds))
  const d = Math.floor(s / 86400)
  s -= d * 86400
  const h = Math.floor(s / 3600)
  s -= h * 3600
  const m = Math.floor(s / 60)
  s -= m * 60
  const parts = d ? [`${d}d`, `${h}h`] : h ? [`${h}h`, `${m}m`] : m ? [`${m}m`, `${s}s`] : [`${s}s`]
  return sign + parts.join(' ')
}

const num = (n: number | null | undefined, digits = 0) =>
  n === null || n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(digits)

const STYLE = `
:root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --muted: #6e7781; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #8884; vertical-align: top; }
th { font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.heap, td.elu { white-space: nowrap; }
.badge { display: inline-block; padding: .1rem .5rem; border-radius: .75rem; font-weight: 600; color: #fff; }
.ok { background: var(--ok); } .warn { background: var(--warn); } .bad { background: var(--bad); } .idle { background: var(--muted); }
.muted, small { color: var(--muted); } meter { width: 8rem; vertical-align: middle; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; } dt { font-weight: 600; } dd { margin: 0; }
.error { color: var(--bad); max-width: 32rem; overflow-wrap: anywhere; }
`

function stateClass(state: string): string {
  if (state === 'running') return 'ok'
  if (state === 'starting' || state === 'restarting' || state === 'stopping') return 'warn'
  if (state === 'failed' || state === 'down') return 'bad'
  return 'idle'
}

function workerRow(w: WorkerStatus): string {
  const reasons = Object.entries(w.restarts)
    .map(([reason, n]) => `${escapeHtml(reason)} ${escapeHtml(n)}`)
    .join(', ')
  const heap =
    w.heapLimitBytes && w.heapUsedBytes !== null
      ? `<meter min="0" max="${escapeHtml(w.heapLimitBytes)}" low="${escapeHtml(0.7 * w.heapLimitBytes)}" high="${escapeHtml(0.85 * w.heapLimitBytes)}" optimum="0" value="${escapeHtml(w.heapUsedBytes)}" title="${escapeHtml(num(w.heapPercent, 1))}%"></meter> ${bytes(w.heapUsedBytes)} / ${bytes(w.heapLimitBytes)} <small>(${escapeHtml(num(w.heapPercent, 1))}%)</small>`
      : '—'
  const elu =
    w.eventLoopUtilization === null
      ? '—'
      : `<meter min="0" max="1" low="0.5" high="0.8" optimum="0" value="${escapeHtml(w.eventLoopUtilization)}"></meter> ${escapeHtml(num(w.eventLoopUtilization * 100, 1))}%`
  const lastError = w.lastError
    ? `<span class="error">${escapeHtml(w.lastError.reason)}: ${escapeHtml(w.lastError.message)}</span><br><small>${escapeHtml(w.lastError.at)}</small>`
    : '<span class="muted">—</span>'
  return `<tr id="worker-${escapeHtml(w.service)}" data-service="${escapeHtml(w.service)}" data-state="${escapeHtml(w.state)}" data-restarts="${escapeHtml(w.restartsTotal)}">
<td class="service"><strong>${escapeHtml(w.service)}</strong></td>
<td class="state"><span class="badge ${stateClass(w.state)}">${escapeHtml(w.state)}</span>${w.enabled && !w.up && w.state === 'running' ? ' <small>(no scrape answer)</small>' : ''}</td>
<td class="uptime num">${escapeHtml(duration(w.uptimeSeconds))}</td>
<td class="restarts num"><span class="count">${escapeHtml(w.restartsTotal)}</span>${reasons ? `<br><small>${reasons}</small>` : ''}</td>
<td class="heap">${heap}</td>
<td class="elu">${elu}</td>
<td class="heartbeat num">${w.heartbeatAgeSeconds === null ? '—' : `${escapeHtml(num(w.heartbeatAgeSeconds, 1))} s`}</td>
<td class="last-error">${lastError}</td>
</tr>`
}

export function renderStatusPage(view: StatusView, refresh: number): string {
  const p = view.process
  // A section of a service that did not answer the view: its figures are not known, not none.
  const silent = (service: ServiceName) =>
    view.unanswered.includes(service)
      ? `<span class="badge warn unanswered">${escapeHtml(service)} did not answer</span>`
      : undefined
  const readyBadge = p.ready
    ? '<span class="badge ok" id="readiness">ready</span>'
    : `<span class="badge bad" id="readiness">not ready</span> <small>${p.notReady.map((n) => `${escapeHtml(n.service)}: ${escapeHtml(n.state)}`).join(', ')}</small>`
  const memory =
    p.memoryLimitBytes && p.residentMemoryBytes !== null
      ? `<meter min="0" max="${escapeHtml(p.memoryLimitBytes)}" low="${escapeHtml(0.7 * p.memoryLimitBytes)}" high="${escapeHtml(0.9 * p.memoryLimitBytes)}" optimum="0" value="${escapeHtml(p.residentMemoryBytes)}"></meter> ${bytes(p.residentMemoryBytes)} of the container's ${bytes(p.memoryLimitBytes)}`
      : `${bytes(p.residentMemoryBytes)} <small>(no container memory limit seen)</small>`
  const s = view.shutdown

  const certRows = view.certificates.files
    .map(
      (c) => `<tr data-file="${escapeHtml(c.file)}">
<td>${escapeHtml(c.file)}</td><td>${escapeHtml(c.subject)}</td><td>${escapeHtml(c.issuer)}</td>
<td>${escapeHtml(c.notAfter)}</td>
<td class="num"><span class="badge ${c.expiresInSeconds < 86400 ? 'bad' : c.renewalDue ? 'warn' : 'ok'}">${c.expired ? 'expired' : escapeHtml(duration(c.expiresInSeconds))}</span></td>
</tr>`,
    )
    .join('\n')

  const t = view.tokens
  const tokenRows = t.types
    .map(
      (x) =>
        `<tr data-type="${escapeHtml(x.type)}"><td>${escapeHtml(x.type)}</td><td class="num">${escapeHtml(x.entries)}</td><td class="num">${escapeHtml(bytes(x.bytes))}</td></tr>`,
    )
    .join('\n')

  const g = view.gateway
  const codes = Object.entries(g.requests)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([code, n]) => `${escapeHtml(code)}: ${escapeHtml(n)}`)
    .join(', ')
  const received = Object.entries(g.received)
    .map(([status, n]) => `${escapeHtml(status)} ${escapeHtml(n)}`)
    .join(', ')

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
${refresh > 0 ? `<meta http-equiv="refresh" content="${escapeHtml(refresh)}">` : ''}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sia-supervisor status</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>sia-supervisor ${readyBadge}</h1>
<div class="muted">phase <strong id="phase">${escapeHtml(p.phase)}</strong> · generated <time id="generated">${escapeHtml(view.generatedAt)}</time> · ${refresh > 0 ? `refreshes every ${escapeHtml(refresh)} s` : 'no refresh'} · <a href="status.json">status.json</a> · <a href="metrics">metrics</a></div>
</header>

<h2>Process</h2>
<dl id="process">
<dt>uptime</dt><dd>${escapeHtml(duration(p.uptimeSeconds))}</dd>
<dt>resident memory</dt><dd>${memory}</dd>
<dt>Node.js</dt><dd>${escapeHtml(p.nodeVersion)}</dd>
<dt>shutdown budget</dt><dd id="shutdown-budget">SHUTDOWN_DELAY ${escapeHtml(s.delaySeconds)} s + SHUTDOWN_TIMEOUT ${escapeHtml(s.timeoutSeconds)} s = <strong>${escapeHtml(s.budgetSeconds)} s</strong> <small>(terminationGracePeriodSeconds ≥ ${escapeHtml(s.minGracePeriodSeconds)})</small></dd>
</dl>

<h2>Workers</h2>
<table id="workers">
<thead><tr><th>service</th><th>state</th><th>uptime</th><th>restarts</th><th>heap used / limit</th><th>event loop</th><th>heartbeat</th><th>last error</th></tr></thead>
<tbody>
${view.workers.map(workerRow).join('\n')}
</tbody>
</table>

<h2>Certificates</h2>
<p>${silent('certificate') ?? (view.certificates.readErrors ? `<span class="badge bad">${escapeHtml(view.certificates.readErrors)} read errors</span>` : '<span class="muted">no read errors</span>')}</p>
<table id="certificates">
<thead><tr><th>file</th><th>subject</th><th>issuer</th><th>not after</th><th>expires in</th></tr></thead>
<tbody>
${certRows || `<tr><td colspan="5" class="muted">${silent('certificate') ?? 'no certificate'}</td></tr>`}
</tbody>
</table>

<h2>Token cache</h2>
${
  t.enabled
    ? `<table id="tokens">
<thead><tr><th>type</th><th>entries</th><th>bytes</th></tr></thead>
<tbody>
${tokenRows || `<tr><td colspan="3" class="muted">${silent('token') ?? 'empty'}</td></tr>`}
</tbody>
</table>
<p>soonest expiry: <strong>${escapeHtml(duration(t.soonestExpirySeconds))}</strong> · fetch errors: <strong id="token-fetch-errors">${escapeHtml(num(t.fetchErrors))}</strong></p>`
    : '<p class="muted" id="tokens">token service disabled</p>'
}

<h2>Gateway</h2>
${
  g.enabled
    ? `<dl id="gateway">
<dt>requests</dt><dd>${codes || silent('gateway') || '<span class="muted">none yet</span>'}</dd>
<dt>request rate</dt><dd>${g.requestRate === null ? '<span class="muted">— (needs an earlier view)</span>' : `${escapeHtml(num(g.requestRate, 2))}/s`}</dd>
<dt>alerts received</dt><dd>${received || silent('gateway') || '<span class="muted">none yet</span>'}</dd>
<dt>created / duplicates</dt><dd>${escapeHtml(num(g.created))} / ${escapeHtml(num(g.duplicates))}${g.createdRate === null ? '' : ` <small>(${escapeHtml(num(g.createdRate, 2))} created/s)</small>`}</dd>
<dt>mean latency</dt><dd>${g.meanLatencySeconds === null ? '—' : `${escapeHtml(num(g.meanLatencySeconds * 1000, 1))} ms`}</dd>
<dt>in flight</dt><dd>${escapeHtml(num(g.inflight))}</dd>
<dt>sink errors</dt><dd>${g.sinkErrors ? `<span class="badge bad">${escapeHtml(g.sinkErrors)}</span>` : escapeHtml(num(g.sinkErrors))}</dd>
<dt>dedup store</dt><dd id="dedup-store">${g.dedupStoreUp === null ? '—' : g.dedupStoreUp ? '<span class="badge ok">up</span>' : '<span class="badge bad">down</span>'}</dd>
</dl>`
    : '<p class="muted" id="gateway">gateway disabled</p>'
}
</body>
</html>
`
}
