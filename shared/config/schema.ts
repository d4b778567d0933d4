import { z } from 'zod'
import { parseAddress } from '../address.js'
import { parseDuration } from '../duration.js'
import { SERVICES } from '../services.js'
import type { Kind, SettingSpec } from './settings.js'

/** Every source (flag, env, file) is reduced to strings first, so one parser per kind serves all three. */
function fromString<T>(parse: (s: string) => T) {
  return z.string().transform((s, ctx): T => {
    try {
      return parse(s)
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
      return z.NEVER
    }
  })
}

const duration = fromString((s) => {
  const ms = parseDuration(s)
  if (ms < 0) throw new Error(`must not be negative, got "${s}"`)
  return ms
})
/** A timer's period: 0 or negative disables the timer, as in SIA. */
const interval = fromString((s) => Math.max(0, parseDuration(s)))

const PARSERS: Record<Kind, z.ZodType> = {
  string: z.string(),
  path: z.string(),
  duration,
  interval,
  int: fromString((s) => {
    if (!/^\d+$/.test(s.trim())) throw new Error(`expected a whole number >= 0, got "${s}"`)
    return Number(s)
  }),
  bool: fromString((s) => {
    const v = s.trim().toLowerCase()
    if (v === 'true' || v === '1') return true
    if (v === 'false' || v === '0' || v === '') return false
    throw new Error(`expected true or false, got "${s}"`)
  }),
  address: fromString((s) => {
    if (s !== '') parseAddress(s)
    return s
  }),
  list: fromString((s) =>
    s
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean),
  ),
}

export function settingSchema(spec: SettingSpec): z.ZodType {
  return spec.values ? z.enum(spec.values as [string, ...string[]]) : PARSERS[spec.kind]
}

/** Per-service tuning, only from the config file (`services.<name>`). */
export const tuningSchema = z.strictObject({
  enabled: z.boolean().optional(),
  startTimeout: duration.optional(),
  shutdownTimeout: duration.optional(),
  resourceLimits: z
    .strictObject({
      maxOldGenerationSizeMb: z.number().int().min(8).optional(),
      maxYoungGenerationSizeMb: z.number().int().min(1).optional(),
      stackSizeMb: z.number().min(1).optional(),
    })
    .optional(),
  restart: z.enum(['permanent', 'transient', 'temporary']).optional(),
  maxRestarts: z.number().int().min(0).optional(),
  restartWindow: duration.optional(),
  restartBackoff: duration.optional(),
  restartBackoffMax: duration.optional(),
  // Workers beat once a second: anything shorter would kill healthy workers.
  watchdogTimeout: duration.pipe(z.number().min(2000, 'must be at least 2s (two heartbeats)')).optional(),
  recycleAtPercent: z.number().min(1).max(100).optional(),
})

export type TuningInput = z.infer<typeof tuningSchema>

export const servicesSchema = z.partialRecord(z.enum(SERVICES), tuningSchema)
