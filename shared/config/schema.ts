import * as z from 'zod/mini'
import { parseAddress } from '../address.js'
import { parseDuration } from '../duration.js'
import { SERVICES } from '../services.js'
import '../zod-messages.js'
import type { Kind, SettingSpec } from './settings.js'

/** Every source (flag, env, file) is reduced to strings first, so one parser per kind serves all three. */
function fromString<T>(parse: (s: string) => T) {
  return z.pipe(
    z.string(),
    z.transform((s: string, ctx): T => {
      try {
        return parse(s)
      } catch (err) {
        ctx.issues.push({ code: 'custom', message: (err as Error).message, input: s })
        return z.NEVER
      }
    }),
  )
}

const duration = fromString((s) => {
  const ms = parseDuration(s)
  if (ms < 0) throw new Error(`must not be negative, got "${s}"`)
  return ms
})
/**
 * A duration in the config file's `services` section, where YAML and JSON may give a number (`0`):
 * read as the string it would be in the environment, as every top-level setting is.
 */
const fileDuration = z.pipe(
  z.pipe(
    z.union([z.string(), z.number()], { error: 'expected a duration such as 30s' }),
    z.transform((v: string | number) => String(v)),
  ),
  duration,
)
/** A timer's period: 0 or negative disables the timer, as in SIA. */
const interval = fromString((s) => Math.max(0, parseDuration(s)))

const PARSERS: Record<Kind, z.ZodMiniType> = {
  string: z.string(),
  path: z.string(),
  duration,
  interval,
  int: fromString((s) => {
    if (!/^\d+$/.test(s.trim())) throw new Error(`expected a whole number >= 0, got "${s}"`)
    const n = Number(s)
    // Past 2^53 a number is not the one written (9007199254740993 is read as ...992).
    if (!Number.isSafeInteger(n))
      throw new Error(`"${s.trim()}" is too large: at most ${Number.MAX_SAFE_INTEGER}`)
    return n
  }),
  bool: fromString((s) => {
    const v = s.trim().toLowerCase()
    if (v === 'true' || v === '1') return true
    // Empty is no answer (a manifest's `value: ""`): an error, never a silent false.
    if (v === 'false' || v === '0') return false
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

export function settingSchema(spec: SettingSpec): z.ZodMiniType {
  if (!spec.values) return PARSERS[spec.kind]
  const { aliases = {} } = spec
  const named = z.transform((s: string) => {
    const lower = s.toLowerCase()
    return aliases[lower] ?? lower
  })
  return z.pipe(z.pipe(z.string(), named), z.enum(spec.values as [string, ...string[]]))
}

/**
 * The largest worker stack a config may ask for (V8's default is under 1 MiB; Node's thread 4 MiB):
 * far past what any service needs, short of the sizes a host cannot reserve.
 */
export const MAX_STACK_MB = 1024

/**
 * The largest heap limits a config may give a worker (16 GiB old, 1 GiB young): far past what any
 * service needs (128 and 16 MiB are the token service's defaults), short of figures no host has
 * (1000000000 was taken: a limit that bounds nothing). Where the container's memory limit can be
 * read, the sum of them all is checked against it too (load.ts, memory-fit.ts).
 */
const MAX_OLD_GENERATION_MB = 16_384
const MAX_YOUNG_GENERATION_MB = 1024
/**
 * The shortest restart intensity window: with 0 every fault was the first of its window, restarted
 * at once with no back-off, and no number of them a crash loop (hundreds of restarts a second).
 */
const MIN_RESTART_WINDOW_MS = 1000

/** Per-service tuning, only from the config file (`services.<name>`). */
export const tuningSchema = z.strictObject({
  enabled: z.optional(z.boolean()),
  // A start with no time at all always fails (a shutdown with none terminates at once: allowed).
  startTimeout: z.optional(z.pipe(fileDuration, z.number().check(z.gt(0, 'must be greater than 0')))),
  shutdownTimeout: z.optional(fileDuration),
  resourceLimits: z.optional(
    z.strictObject({
      maxOldGenerationSizeMb: z.optional(z.int().check(z.gte(8), z.lte(MAX_OLD_GENERATION_MB))),
      maxYoungGenerationSizeMb: z.optional(z.int().check(z.gte(1), z.lte(MAX_YOUNG_GENERATION_MB))),
      // A thread's stack is reserved whole when it is made: past what the host gives, the worker
      // cannot be made at all (EAGAIN), and the boot fails with no setting named.
      stackSizeMb: z.optional(z.number().check(z.gte(1), z.lte(MAX_STACK_MB))),
    }),
  ),
  restart: z.optional(z.enum(['permanent', 'transient', 'temporary'])),
  maxRestarts: z.optional(z.int().check(z.gte(0))),
  restartWindow: z.optional(
    z.pipe(fileDuration, z.number().check(z.gte(MIN_RESTART_WINDOW_MS, 'must be at least 1s'))),
  ),
  restartBackoff: z.optional(fileDuration),
  restartBackoffMax: z.optional(fileDuration),
  // Workers beat once a second: anything shorter would kill healthy workers.
  watchdogTimeout: z.optional(
    z.pipe(fileDuration, z.number().check(z.gte(2000, 'must be at least 2s (two heartbeats)'))),
  ),
  recycleAtPercent: z.optional(z.number().check(z.gte(1), z.lte(100))),
})

export type TuningInput = z.infer<typeof tuningSchema>

export const servicesSchema = z.partialRecord(z.enum(SERVICES), tuningSchema)
