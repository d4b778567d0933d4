import { z } from 'zod'

/** AlertManager webhook v4; unknown fields are ignored (zod strips them). */
const labelSet = z.record(z.string(), z.string())
const alertStatus = z.enum(['firing', 'resolved'])

const alertSchema = z.object({
  status: alertStatus,
  labels: labelSet,
  annotations: labelSet.optional(),
  startsAt: z.string().optional(),
  endsAt: z.string().optional(),
  generatorURL: z.string().optional(),
  fingerprint: z.string().optional(),
})

const webhookSchema = z.object({
  version: z.string().optional(),
  groupKey: z.string().optional(),
  status: alertStatus.optional(),
  receiver: z.string().optional(),
  groupLabels: labelSet.optional(),
  commonLabels: labelSet.optional(),
  commonAnnotations: labelSet.optional(),
  externalURL: z.string().optional(),
  truncatedAlerts: z.number().int().nonnegative().optional(),
  alerts: z.array(alertSchema).min(1, 'expected at least one alert'),
})

export type AlertStatus = z.infer<typeof alertStatus>
export type Alert = z.infer<typeof alertSchema>
export type Webhook = z.infer<typeof webhookSchema>

export type ParseResult =
  | { ok: true; webhook: Webhook }
  | { ok: false; detail: string; path: string; errors: { path: string; message: string }[] }

/** Parses and validates a body; a failure names the JSON path of the first problem. */
export function parseWebhook(body: Buffer): ParseResult {
  let doc: unknown
  try {
    doc = JSON.parse(body.toString('utf8'))
  } catch (err) {
    const message = `malformed JSON: ${(err as Error).message}`
    return { ok: false, detail: message, path: '$', errors: [{ path: '$', message }] }
  }
  const parsed = webhookSchema.safeParse(doc)
  if (parsed.success) return { ok: true, webhook: parsed.data }
  const errors = parsed.error.issues.slice(0, 20).map((i) => ({ path: jsonPath(i.path), message: i.message }))
  const first = errors[0] ?? { path: '$', message: 'invalid payload' }
  return { ok: false, detail: `${first.path}: ${first.message}`, path: first.path, errors }
}

function jsonPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((acc, p) => {
    if (typeof p === 'number') return `${acc}[${p}]`
    const key = String(p)
    return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? `${acc}.${key}` : `${acc}[${JSON.stringify(key)}]`
  }, '$')
}
