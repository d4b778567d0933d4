import { SERVICES } from '../../shared/services.js'

/**
 * One run of the fault campaign, derived from its seed alone: 1–3 failpoints of DESIGN.md §3 (every
 * name and action, with `N*` counts), the per-service limits that make `oom` and `block` quick,
 * and the moment SIGTERM is sent; and, drawn from a second stream of the seed so that the first
 * part of a seed's plan never changes (the regressions of test/chaos.test.ts name seeds), SIGHUP
 * reloads before it, webhooks sent all along, `gateway.before-sink` armed for them, a SIGHUP
 * during the shutdown, and `certificate.before-write` and `token.before-write` armed. The same seed always gives the same plan.
 */
export interface Plan {
  seed: number
  failpoints: string
  /** After the CLI's signal handlers are in: ms until SIGTERM. */
  sigtermAfterMs: number
  shutdownDelayMs: number
  shutdownTimeoutMs: number
  config: { services: Record<string, Record<string, unknown>>; [setting: string]: unknown }
  /** After the CLI's signal handlers are in: ms until each SIGHUP (all before the SIGTERM). */
  reloadsAtMs: number[]
  /** Webhooks posted one after another from the start to the exit, each answered 2xx checked in the sink. */
  traffic: boolean
  /** ms after the SIGTERM until a SIGHUP, which the shutdown must log and ignore (undefined: none). */
  hupAfterTermMs?: number
}

const TASKS: Record<string, string[]> = {
  certificate: ['refresh-timer'],
  token: ['server', 'refresh-timer'],
  'memory-reporter': ['reporter'],
  gateway: ['server'],
  metrics: ['server'],
  healthcheck: ['server'],
}

const SUPERVISOR_ACTIONS = ['sigint', 'sigterm', 'error', 'hang', 'delay'] as const
const WORKER_ACTIONS = [...SUPERVISOR_ACTIONS, 'crash', 'reject', 'block', 'oom', 'exit'] as const

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** `basic`: the plan as the campaign drew it before reloads and traffic (the named regressions). */
export function planFor(seed: number, { basic = false }: { basic?: boolean } = {}): Plan {
  const rnd = prng(seed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T
  const names = new Set<string>()
  const count = 1 + Math.floor(rnd() * 3)
  const specs: string[] = []
  while (specs.length < count) {
    const service = pick(SERVICES)
    const kind = pick(['before-start', 'start', 'before-task', 'shutdown', 'during-shutdown'] as const)
    const name =
      kind === 'before-start'
        ? `supervisor.before-start:${service}`
        : kind === 'during-shutdown'
          ? 'supervisor.during-shutdown'
          : kind === 'before-task'
            ? `${service}.before-task:${pick(TASKS[service]!)}`
            : `${service}.${kind}`
    if (names.has(name)) continue
    names.add(name)
    const action = pick(name.startsWith('supervisor.') ? SUPERVISOR_ACTIONS : WORKER_ACTIONS)
    const text =
      action === 'delay'
        ? `delay(${Math.floor(rnd() * 1500)})`
        : action === 'exit'
          ? `exit(${pick([0, 1, 3])})`
          : action
    const times = rnd() < 0.5 ? `${1 + Math.floor(rnd() * 3)}*` : ''
    specs.push(`${name}=${times}${text}`)
  }
  const tuning = {
    startTimeout: '2s',
    // Small heaps: `oom` is reached in well under a second; `block` meets the shortest watchdog.
    resourceLimits: { maxOldGenerationSizeMb: 48, maxYoungGenerationSizeMb: 8 },
    watchdogTimeout: '2s',
    restartBackoff: '20ms',
    restartBackoffMax: '200ms',
  }
  const plan: Plan = {
    seed,
    failpoints: specs.join(';'),
    sigtermAfterMs: Math.floor(rnd() * 3000),
    shutdownDelayMs: pick([0, 0, 200]),
    shutdownTimeoutMs: pick([1000, 1500, 2500]),
    config: {
      // What the small heaps hold (load.ts refuses bounds a heap cannot): a thousand tokens a
      // cache, a thousand fingerprints in the gateway's store.
      tokenCacheMaxEntries: '1000',
      gatewayDedupMaxEntries: '1000',
      services: Object.fromEntries(SERVICES.map((s) => [s, tuning])),
    },
    reloadsAtMs: [],
    traffic: false,
  }
  return basic ? plan : extend(plan)
}

/** The actions of a failpoint inside a step of our own (the gateway's sink, the certificate files). */
const STEP_ACTIONS = ['error', 'hang', 'delay', 'crash', 'reject', 'block', 'exit', 'sigterm'] as const

function stepFailpoint(name: string, rnd: () => number): string {
  const action = STEP_ACTIONS[Math.floor(rnd() * STEP_ACTIONS.length)]!
  const text =
    action === 'delay'
      ? `delay(${Math.floor(rnd() * 1500)})`
      : action === 'exit'
        ? `exit(${[0, 1, 3][Math.floor(rnd() * 3)]})`
        : action
  return `;${name}=${rnd() < 0.5 ? `${1 + Math.floor(rnd() * 3)}*` : ''}${text}`
}

/** Reloads, traffic and the sink's failpoint, from the seed's second stream. */
function extend(plan: Plan): Plan {
  const rnd = prng(plan.seed ^ 0x5eed_c0de)
  const reloads = rnd() < 0.5 ? 1 + Math.floor(rnd() * 2) : 0
  const reloadsAtMs = Array.from({ length: reloads }, () => Math.floor(rnd() * plan.sigtermAfterMs)).sort(
    (a, b) => a - b,
  )
  const traffic = rnd() < 0.5
  let failpoints = plan.failpoints
  if (traffic && rnd() < 0.5) failpoints += stepFailpoint('gateway.before-sink', rnd)
  const hupAfterTermMs = rnd() < 0.25 ? Math.floor(rnd() * 500) : undefined
  // Drawn last, so the draws above stay what they were for every seed.
  if (rnd() < 0.25) failpoints += stepFailpoint('certificate.before-write', rnd)
  if (rnd() < 0.25) failpoints += stepFailpoint('token.before-write', rnd)
  return {
    ...plan,
    failpoints,
    reloadsAtMs,
    traffic,
    ...(hupAfterTermMs !== undefined ? { hupAfterTermMs } : {}),
  }
}
