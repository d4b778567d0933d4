import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const SIGNALS = '/api/v1/signals/prometheus'
export const FIXTURE = readFileSync(new URL('../../../test/fixtures/alertmanager.json', import.meta.url))

/**
 * Environment for a sidecar that runs only what the gateway tests look at (gateway, metrics):
 * the certificate and token services would spend seconds generating keys for nothing.
 */
export function gatewayEnv(env: Record<string, string> = {}): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'sia-gw-'))
  const file = join(dir, 'config.json')
  writeFileSync(
    file,
    JSON.stringify({ services: { certificate: { enabled: false }, token: { enabled: false } } }),
  )
  return { SIA_CONFIG_FILE: file, TOKEN_SERVER_ADDR: '', HEALTH_CHECK_ADDR: '', ...env }
}

export interface AlertInput {
  status?: 'firing' | 'resolved'
  labels: Record<string, string>
  annotations?: Record<string, string>
  fingerprint?: string
  startsAt?: string
}

export function alert(name: string, extra: Partial<AlertInput> = {}): AlertInput {
  return {
    status: 'firing',
    startsAt: '2025-10-30T10:00:00Z',
    annotations: { summary: `${name} is firing` },
    ...extra,
    labels: { alertname: name, namespace: 'payments', severity: 'critical', ...extra.labels },
  }
}

export function webhook(alerts: AlertInput[]): Record<string, unknown> {
  return { version: '4', status: 'firing', receiver: 'sia', groupKey: '{}', alerts }
}

/** Distinct alerts, about 500 bytes each, up to just under `bytes` of JSON. */
export function bigBatch(bytes: number, tag = 'Big'): { payload: Record<string, unknown>; count: number } {
  const alerts: AlertInput[] = []
  let size = 200
  for (let i = 0; ; i++) {
    const a = alert(`${tag}${i}`, {
      labels: { instance: `host-${i}.example:9100`, job: 'node', pod: `pod-${i % 97}` },
      annotations: {
        summary: `${tag}${i} is firing`,
        description: `disk ${i} is ${i % 100}% full`.repeat(4),
      },
    })
    const n = JSON.stringify(a).length + 1
    if (size + n > bytes) break
    size += n
    alerts.push(a)
  }
  return { payload: webhook(alerts), count: alerts.length }
}

export interface Answer {
  status: number
  headers: Headers
  body: Record<string, unknown>
}

export async function post(
  base: string,
  payload: unknown,
  headers: Record<string, string> = {},
  path = SIGNALS,
): Promise<Answer> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload),
  })
  const text = await res.text()
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : {} }
}

export function readJsonLines(path: string): Record<string, unknown>[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** The value of one series in a Prometheus text exposition (undefined when absent). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    const want = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))
    if (want) return Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return undefined
}
