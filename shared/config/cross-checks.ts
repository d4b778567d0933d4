import { parseAddress } from '../address.js'
import { NON_HEAP_RSS_MB } from '../container-resources.js'
import { formatDuration } from '../duration.js'
import { HEAP_SHARE } from '../http/connection-cap.js'
import { SERVICES, type ServiceName } from '../services.js'
import { ADDRESS_OF } from './addresses.js'
import { configError } from './config-error.js'
import { deadlineTooLong, PAST_BUDGET_MS, type Term } from './deadlines.js'
import { DEFAULT_RESOURCE_LIMITS } from './limits.js'
import { dedupStoreMb, heapNeededMb, IDLE_HEAP_MB, processMemoryMb, tokenCachesMb } from './memory-fit.js'
import type { TuningInput } from './schema.js'
import type { SettingKey } from './settings.js'
import type { ServiceTuning, Settings } from './types.js'

// Checks of settings each valid alone that together are not (loadConfig calls them once each
// setting has passed its own): deadlines past a timer, a restart policy, memory, ports.

/** What the checks are given: the settings, each service's tuning, and how to name a setting. */
export interface Checked {
  s: Settings
  services: Record<ServiceName, ServiceTuning>
  /** `services` as the config file gave them. */
  file: Partial<Record<ServiceName, TuningInput>>
  /** A setting as the operator wrote it (its flag, variable or key, and where). */
  named: (key: SettingKey) => string
  /** The settings the operator set (not defaults). */
  given: ReadonlySet<SettingKey>
  configPath: string | undefined
}

/**
 * The deadlines made by adding settings (deadlines.ts), each named by what the operator wrote:
 * the certificate service's start (its start timeout and the jitter pause), MODE=init's (the
 * certificate's and the token's start timeouts) and the shutdown budget.
 */
export function checkDerivedDeadlines({ s, services, file, named, given, configPath }: Checked): void {
  /** A service's start timeout as given (the certificate's without the jitter it is given too). */
  const start = (name: ServiceName): Term => {
    const set = file[name]?.startTimeout
    return set !== undefined
      ? { setting: `services.${name}.startTimeout (in ${configPath})`, ms: set, given: true }
      : { setting: named('startTimeout'), ms: s.startTimeout, given: given.has('startTimeout') }
  }
  const term = (key: 'shutdownDelay' | 'shutdownTimeout'): Term => ({
    setting: named(key),
    ms: s[key],
    given: given.has(key),
  })
  const jitter: Term = {
    setting: named('delayJitterSeconds'),
    ms: s.delayJitterSeconds * 1000,
    given: given.has('delayJitterSeconds'),
  }
  const tooLong = deadlineTooLong([
    ...(services.certificate.enabled
      ? [
          {
            what: "the certificate service's start deadline",
            terms: [start('certificate'), jitter],
          },
        ]
      : []),
    ...(s.mode === 'init'
      ? [
          {
            what: "MODE=init's deadline",
            terms: [start('certificate'), start('token')],
          },
        ]
      : []),
    {
      what: 'the shutdown budget',
      terms: [term('shutdownDelay'), term('shutdownTimeout')],
      pastMs: PAST_BUDGET_MS,
    },
  ])
  if (tooLong) throw configError(tooLong.setting, tooLong.reason)
}

/**
 * A service's restart policy, whose settings are each valid alone: a back-off that starts past
 * its own cap would never grow (every restart waited the cap, whatever restartBackoff said).
 */
export function checkRestartTuning(
  name: ServiceName,
  tuning: ServiceTuning,
  t: TuningInput,
  configPath: string | undefined,
): void {
  if (tuning.restartBackoffMax >= tuning.restartBackoff) return
  const key = (k: string) => `services.${name}.${k} (in ${configPath})`
  throw t.restartBackoffMax !== undefined
    ? configError(
        key('restartBackoffMax'),
        `must not be shorter than restartBackoff (${formatDuration(tuning.restartBackoff)})`,
      )
    : configError(
        key('restartBackoff'),
        `must not be longer than restartBackoffMax (${formatDuration(tuning.restartBackoffMax)}, its default)`,
      )
}

/**
 * What a worker holds at a bound of its own settings must fit in its heap, beside its idle heap,
 * in what its connections leave (memory-fit.ts): a 24 MiB token heap with the default token cache
 * bounds ended the thread out of heap after ~8,200 distinct keys, before either cache was full.
 * The token caches are filled by a token server only (token files hold the targets alone); the
 * dedup store is the gateway's when there is no Redis. Names the bound the operator set (the
 * first of `bounds` given), else the heap limit.
 */
export function checkBoundsFit({ s, services, file, named, given, configPath }: Checked): void {
  const types = s.tokenType.split('+').length
  const held: { service: 'token' | 'gateway'; what: string; mb: number; bounds: SettingKey[] }[] = []
  if (services.token.enabled && s.tokenServerAddr !== '') {
    const mb = tokenCachesMb(types, s.tokenCacheMaxEntries, s.tokenCacheMaxBytes)
    held.push({
      service: 'token',
      what: `the token caches at their bounds (${named('tokenCacheMaxEntries')} ${s.tokenCacheMaxEntries}, ${named('tokenCacheMaxBytes')} ${s.tokenCacheMaxBytes}, for each of ${types} token types: ${Math.ceil(mb)} MiB of heap)`,
      mb,
      bounds: ['tokenCacheMaxBytes', 'tokenCacheMaxEntries'],
    })
  }
  if (services.gateway.enabled && s.redisUrl === '' && s.gatewayDedupMaxEntries > 0) {
    const mb = dedupStoreMb(s.gatewayDedupMaxEntries)
    held.push({
      service: 'gateway',
      what: `the in-memory dedup store at its bound (${named('gatewayDedupMaxEntries')} ${s.gatewayDedupMaxEntries}: ${Math.ceil(mb)} MiB of heap)`,
      mb,
      bounds: ['gatewayDedupMaxEntries'],
    })
  }
  for (const { service, what, mb, bounds } of held) {
    const heap = services[service].resourceLimits.maxOldGenerationSizeMb ?? Number.POSITIVE_INFINITY
    const needMb = heapNeededMb(service, mb)
    if (heap >= needMb) continue
    const heapKey = `services.${service}.resourceLimits.maxOldGenerationSizeMb`
    const bound = bounds.find((k) => given.has(k))
    const room = `beside its idle ${IDLE_HEAP_MB[service]} MiB, in the ${(1 - HEAP_SHARE) * 100}% of its heap its connections leave`
    throw bound && file[service]?.resourceLimits?.maxOldGenerationSizeMb === undefined
      ? configError(
          named(bound),
          `${what} needs a ${service} heap of ${needMb} MiB (${room}), and the ${service} worker's is ${heap} MiB (${heapKey}): lower the bound or raise the heap`,
        )
      : configError(
          bound ? named(bound) : `${heapKey} (in ${configPath})`,
          `${heap} MiB is too small a ${service} heap for ${what} ${room}: at least ${needMb} MiB, or a smaller bound`,
        )
  }
}

/**
 * The workers' heap limits, with the CSR pool and what the process holds besides, against the
 * container's memory limit (null: none known): past it a leak is the pod OOM-killed, not one
 * thread's `oom` (DESIGN.md §8). Refused when the heap limits the operator raised make it so,
 * named; a container smaller than the defaults need is said (they still run).
 */
export function containerFit(
  services: Record<ServiceName, ServiceTuning>,
  file: Partial<Record<ServiceName, TuningInput>>,
  limitBytes: number | null,
  configPath: string | undefined,
): { setting: string; reason: string; refuse: boolean } | undefined {
  if (limitBytes === null) return undefined
  const needMb = processMemoryMb(services)
  const limitMb = Math.floor(limitBytes / 2 ** 20)
  if (needMb <= limitMb) return undefined
  const fields = ['maxOldGenerationSizeMb', 'maxYoungGenerationSizeMb'] as const
  const raised = SERVICES.filter((name) => services[name].enabled).flatMap((name) =>
    fields
      .filter((f) => (file[name]?.resourceLimits?.[f] ?? 0) > (DEFAULT_RESOURCE_LIMITS[name][f] ?? 0))
      .map((f) => `services.${name}.resourceLimits.${f} (in ${configPath})`),
  )
  const sum = `the workers' heap limits, the CSR pool's and the ${NON_HEAP_RSS_MB} MiB the process holds besides come to ${needMb} MiB, over the container's memory limit (${limitMb} MiB)`
  // Refused only for what the raise adds: limits moved between workers, or raised by less than
  // others were lowered, need no more than the defaults, which run here with a warning.
  const defaultsMb = processMemoryMb(
    Object.fromEntries(
      SERVICES.map((name) => [
        name,
        { enabled: services[name].enabled, resourceLimits: DEFAULT_RESOURCE_LIMITS[name] },
      ]),
    ) as Record<ServiceName, Pick<ServiceTuning, 'enabled' | 'resourceLimits'>>,
  )
  if (raised.length > 0 && needMb > defaultsMb) {
    const also = raised.length > 1 ? ` (with ${raised.slice(1).join(', ')})` : ''
    return {
      refuse: true,
      setting: raised[0]!,
      reason: `${sum}${also}: a leak would get the pod OOM-killed instead of ending one thread; lower it or raise the container's limit`,
    }
  }
  return {
    refuse: false,
    setting: 'services.*.resourceLimits',
    reason: `${sum}: a leak may get the pod OOM-killed instead of ending one thread; give the container ${needMb} MiB or set smaller resourceLimits`,
  }
}

/**
 * Each service listens on a port of its own. Every listener asks for SO_REUSEPORT (so a successor
 * can share its predecessor's port, DESIGN.md §8), so two services given one port would both bind
 * it and the kernel would split connections between them: refused here, whatever the hosts.
 */
export function checkPortsApart({ s, services, named, given }: Checked): void {
  const owner = new Map<number, SettingKey>()
  for (const name of SERVICES) {
    const key = ADDRESS_OF[name]
    if (!key || !services[name].enabled || s[key] === '') continue
    const { port } = parseAddress(s[key] as string)
    if (port === 0) continue
    const first = owner.get(port)
    if (first) {
      // The one the operator set is named (the later one when both or neither were).
      const [blamed, other] = given.has(first) && !given.has(key) ? [first, key] : [key, first]
      throw configError(
        named(blamed),
        `port ${port} is also ${named(other)}'s: each service needs a port of its own`,
      )
    }
    owner.set(port, key)
  }
}
