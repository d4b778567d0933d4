import * as z from 'zod/mini'
import { ZodMiniType } from 'zod/mini'
import { $constructor, type $ZodObjectDef, $ZodObjectJIT } from 'zod/v4/core'
import { mapSliced } from '../../shared/slices.js'
import '../../shared/zod-messages.js'

/** A label or annotation map: names to string values, null-prototype. */
export type Labels = Record<string, string>

/**
 * Label maps are plain data: every name is kept as an own property, `__proto__` and
 * `constructor` included (JSON.parse keeps them; an object literal, Object.assign or zod's record
 * would drop `__proto__`). So the stored labels and the fingerprint are the labels AlertManager
 * sent; a label read by a configured name goes through Object.hasOwn (fingerprint.ts), never the
 * prototype.
 */
const labelSet = z.pipe(
  z.unknown(),
  z.transform((value: unknown, ctx): Labels => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      ctx.issues.push({ code: 'custom', message: 'expected an object of string values', input: value })
      return z.NEVER
    }
    // JSON.parse made every name an own data property, `__proto__` included: the object is kept as
    // it is (a copy would be a slow dictionary-mode object, ~30% of the gateway's CPU in batches).
    const labels = value as Record<string, unknown>
    for (const name of Object.keys(labels)) {
      const v = labels[name]
      if (typeof v !== 'string') {
        ctx.issues.push({
          code: 'custom',
          message: `expected a string, received ${typeOf(v)}`,
          path: [name],
          input: v,
        })
      }
    }
    return labels as Labels
  }),
)
const alertStatus = z.enum(['firing', 'resolved'])

/**
 * `z.object` with zod's compiled object parser (zod/v4/core's `$ZodObjectJIT`, what zod's own
 * `z.object` uses; zod/mini's walks the shape generically): the parser is written once for the
 * shape, so an alert is checked without a result object per property. 0.15 µs an alert against
 * 0.85 µs, and fewer young objects in a batch of hundreds (README, Performance). Same schema, same
 * issues; where code generation is not allowed zod falls back to the generic walk.
 */
const ZodMiniObjectJIT = $constructor('ZodMiniObjectJIT', (inst: z.ZodMiniObject, def: $ZodObjectDef) => {
  $ZodObjectJIT.init(inst, def)
  ZodMiniType.init(inst, def)
})
function compiledObject<T extends z.core.$ZodLooseShape>(shape: T): z.ZodMiniObject<T, z.core.$strip> {
  return new ZodMiniObjectJIT({ type: 'object', shape }) as unknown as z.ZodMiniObject<T, z.core.$strip>
}

const alertSchema = compiledObject({
  status: alertStatus,
  labels: labelSet,
  annotations: z.optional(labelSet),
  startsAt: z.optional(z.string()),
  endsAt: z.optional(z.string()),
  generatorURL: z.optional(z.string()),
  fingerprint: z.optional(z.string()),
})

/** AlertManager webhook v4; unknown fields are ignored (zod strips them). */
const webhookSchema = compiledObject({
  version: z.literal('4', { error: 'expected "4" (AlertManager webhook version 4)' }),
  groupKey: z.optional(z.string()),
  status: z.optional(alertStatus),
  receiver: z.optional(z.string()),
  groupLabels: z.optional(labelSet),
  commonLabels: z.optional(labelSet),
  commonAnnotations: z.optional(labelSet),
  externalURL: z.optional(z.string()),
  truncatedAlerts: z.optional(z.int().check(z.nonnegative())),
  alerts: z.array(alertSchema).check(z.minLength(1, 'expected at least one alert')),
})
/** The webhook with its alerts unchecked: they are checked one by one, in slices. */
const envelopeSchema = z.extend(webhookSchema, {
  alerts: z.array(z.unknown()).check(z.minLength(1, 'expected at least one alert')),
})
/** Problems listed in a 400 answer at most. */
const MAX_ERRORS = 20

export type AlertStatus = z.infer<typeof alertStatus>
export type Alert = z.infer<typeof alertSchema>
export type Webhook = z.infer<typeof webhookSchema>

export type ParseResult =
  | { ok: true; webhook: Webhook }
  | { ok: false; detail: string; path: string; errors: { path: string; message: string }[] }

/**
 * Parses and validates a body (its text); a failure names the JSON path of the first problem. The
 * envelope first, then each alert, in slices that leave the loop free between them (a 1 MiB batch
 * holds thousands of alerts). JSON.parse itself is the one step in one piece.
 */
export async function parseWebhook(body: string): Promise<ParseResult> {
  let doc: unknown
  try {
    doc = JSON.parse(body)
  } catch (err) {
    const message = `malformed JSON: ${(err as Error).message}`
    return { ok: false, detail: message, path: '$', errors: [{ path: '$', message }] }
  }
  const envelope = envelopeSchema.safeParse(doc)
  if (!envelope.success) return invalid(envelope.error.issues)
  const issues: { path: PropertyKey[]; message: string }[] = []
  const alerts = await mapSliced(envelope.data.alerts, (a, i) => {
    const parsed = alertSchema.safeParse(a)
    if (parsed.success) return parsed.data
    for (const issue of parsed.error.issues.slice(0, MAX_ERRORS - issues.length)) {
      issues.push({ path: ['alerts', i, ...issue.path], message: issue.message })
    }
    return undefined
  })
  if (issues.length > 0) return invalid(issues)
  return { ok: true, webhook: { ...envelope.data, alerts: alerts as Alert[] } }
}

function invalid(issues: readonly { path: PropertyKey[]; message: string }[]): ParseResult {
  const errors = issues.slice(0, MAX_ERRORS).map((i) => ({ path: jsonPath(i.path), message: i.message }))
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

function typeOf(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v
}
