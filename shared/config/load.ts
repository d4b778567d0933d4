import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parse as parseYaml } from 'yaml'
import { codedError } from '../errors.js'
import { parseFailpoints } from '../failpoints.js'
import { parseTargets } from '../identity/targets.js'
import { SERVICES, type ServiceName } from '../services.js'
import { DEFAULT_RESOURCE_LIMITS } from './limits.js'
import { parseRedisUrl } from './redis-url.js'
import { servicesSchema, settingSchema, type TuningInput } from './schema.js'
import { envName, flagName, SETTINGS, type SettingKey, type SettingSpec } from './settings.js'
import type { Config, ServiceTuning, Settings } from './types.js'

/** Something about the configuration an operator should hear, logged once the logger exists. */
export interface ConfigWarning {
  setting: string
  reason: string
}

export type Invocation =
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'run'; config: Config; warnings: ConfigWarning[] }

const KEYS = Object.keys(SETTINGS) as SettingKey[]

/** The setting each service's address comes from: an empty address disables the service. */
const ADDRESS_OF: Partial<Record<ServiceName, SettingKey>> = {
  token: 'tokenServerAddr',
  gateway: 'gatewayAddr',
  metrics: 'metricsServerAddr',
  healthcheck: 'healthCheckAddr',
}

function configError(setting: string, reason: string) {
  const err = codedError('ERR_CONFIG', `invalid setting ${setting}: ${reason}`)
  return Object.assign(err, { setting })
}

/** Flags > environment > config file > defaults. Throws ERR_CONFIG naming the setting. */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): Invocation {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    help: { type: 'boolean' },
    version: { type: 'boolean' },
    config: { type: 'string' },
  }
  for (const key of KEYS) options[flagName(key)] = { type: 'string' }
  let flags: Record<string, string | boolean | undefined>
  try {
    flags = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values
  } catch (err) {
    throw configError('(command line)', `${(err as Error).message}; see --help`)
  }
  if (flags.help) return { kind: 'help' }
  if (flags.version) return { kind: 'version' }

  const configPath = (flags.config as string | undefined) ?? env.SIA_CONFIG_FILE
  const file = configPath ? readConfigFile(configPath) : {}

  const settings: Record<string, unknown> = {}
  const warnings: ConfigWarning[] = []
  for (const key of KEYS) {
    const spec: SettingSpec = SETTINGS[key]
    const sources: [string, unknown][] = [
      [`--${flagName(key)}`, flags[flagName(key)]],
      [envName(key), env[envName(key)]],
      ...(spec.secret ? [secretFile(envName(key), env)] : []),
      [`${key} (in ${configPath})`, file[key]],
    ]
    const [from, raw] = sources.find(([, v]) => v !== undefined) ?? [envName(key), spec.default]
    if (spec.secret && from.startsWith('--')) {
      warnings.push({
        setting: from,
        reason: `a secret given as a flag is visible to every user in ps; use ${envName(key)}_FILE`,
      })
    }
    const parsed = settingSchema(spec).safeParse(asString(raw))
    if (!parsed.success) {
      const reason = parsed.error.issues[0]?.message ?? 'invalid value'
      throw configError(from, spec.secret ? reason.replaceAll(String(raw), '***') : reason)
    }
    settings[key] = parsed.data
  }
  const s = settings as Settings
  if (!s.healthCheckEndpoint.startsWith('/')) {
    throw configError(envName('healthCheckEndpoint'), 'must be a path starting with "/"')
  }
  try {
    parseFailpoints(s.failpoints)
  } catch (err) {
    throw configError(envName('failpoints'), (err as Error).message)
  }
  try {
    parseTargets(s.targetDomainRoles)
  } catch (err) {
    throw configError(envName('targetDomainRoles'), (err as Error).message)
  }
  if (Boolean(s.tokenServerTlsCertPath) !== Boolean(s.tokenServerTlsKeyPath)) {
    throw configError(
      envName('tokenServerTlsKeyPath'),
      'TOKEN_SERVER_TLS_CERT_PATH and _KEY_PATH go together',
    )
  }
  if (s.tokenServerTlsCaPath && !s.tokenServerTlsCertPath) {
    throw configError(
      envName('tokenServerTlsCaPath'),
      'mutual TLS needs TOKEN_SERVER_TLS_CERT_PATH and _KEY_PATH',
    )
  }
  for (const key of [
    'httpHeaderTimeout',
    'httpRequestTimeout',
    'tokenCacheMaxEntries',
    'tokenCacheMaxBytes',
  ] as const) {
    if (s[key] <= 0) throw configError(envName(key), 'must be greater than 0')
  }
  if (s.httpHeaderTimeout > s.httpRequestTimeout) {
    throw configError(envName('httpHeaderTimeout'), 'must not be longer than HTTP_REQUEST_TIMEOUT')
  }
  s.keyFile ||= join(s.dataDir, 'key.pem')
  s.certFile ||= join(s.dataDir, 'cert.pem')
  s.caCertFile ||= join(s.dataDir, 'ca.pem')
  s.roleCertDir ||= s.dataDir
  s.gatewaySinkFile ||= join(s.dataDir, 'alerts.jsonl')
  if (s.redisUrl !== '') {
    try {
      parseRedisUrl(s.redisUrl)
    } catch (err) {
      throw configError(envName('redisUrl'), (err as Error).message)
    }
  }
  if (s.gatewaySink === 'redis-stream' && s.redisUrl === '') {
    throw configError(envName('gatewaySink'), 'redis-stream needs REDIS_URL')
  }
  if (s.gatewaySink === 'kubernetes' && s.gatewayKubeApi === '' && !env.KUBERNETES_SERVICE_HOST) {
    throw configError(envName('gatewayKubeApi'), 'required with GATEWAY_SINK=kubernetes outside a cluster')
  }

  const parsed = servicesSchema.safeParse(file.services ?? {})
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw configError(`services.${issue?.path.join('.')} (in ${configPath})`, issue?.message ?? 'invalid')
  }
  const services = {} as Record<ServiceName, ServiceTuning>
  for (const name of SERVICES) {
    const addressKey = ADDRESS_OF[name]
    if (parsed.data[name]?.enabled === true && addressKey && s[addressKey] === '') {
      throw configError(
        `services.${name}.enabled (in ${configPath})`,
        `true, but ${envName(addressKey)} is empty`,
      )
    }
    services[name] = tuningFor(name, s, parsed.data[name] ?? {})
  }
  return { kind: 'run', config: { ...s, services }, warnings }
}

function tuningFor(name: ServiceName, s: Settings, t: TuningInput): ServiceTuning {
  const addressKey = ADDRESS_OF[name]
  return {
    enabled:
      t.enabled ??
      ((addressKey === undefined || s[addressKey] !== '') && (name !== 'token' || s.useTokenServer)),
    // The certificate service may wait up to DELAY_JITTER_SECONDS before its boot fetch.
    startTimeout:
      t.startTimeout ?? s.startTimeout + (name === 'certificate' ? s.delayJitterSeconds * 1000 : 0),
    shutdownTimeout: t.shutdownTimeout ?? s.shutdownTimeout,
    resourceLimits: t.resourceLimits ?? DEFAULT_RESOURCE_LIMITS[name],
    restart: t.restart ?? 'permanent',
    maxRestarts: t.maxRestarts ?? 5,
    restartWindow: t.restartWindow ?? 60_000,
    restartBackoff: t.restartBackoff ?? 100,
    restartBackoffMax: t.restartBackoffMax ?? 15_000,
    watchdogTimeout: t.watchdogTimeout ?? 10_000,
    recycleAtPercent: t.recycleAtPercent ?? 90,
  }
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw configError('--config', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`)
  }
  let doc: unknown
  try {
    doc = parseYaml(text) ?? {} // YAML is a superset of JSON: one parser for both
  } catch (err) {
    throw configError(
      '--config',
      `${path} is not valid JSON or YAML: ${(err as Error).message.split('\n')[0]}`,
    )
  }
  if (typeof doc !== 'object' || Array.isArray(doc))
    throw configError('--config', `${path} must hold a mapping`)
  const record = doc as Record<string, unknown>
  for (const key of Object.keys(record)) {
    if (key !== 'services' && !(key in SETTINGS)) throw configError(`${key} (in ${path})`, 'unknown setting')
  }
  return record
}

/**
 * `<SETTING>_FILE`: a secret read from a file, as Kubernetes mounts secrets (one trailing newline
 * dropped). Setting both it and `<SETTING>` is ambiguous, and an error.
 */
function secretFile(name: string, env: NodeJS.ProcessEnv): [string, unknown] {
  const path = env[`${name}_FILE`]
  if (path === undefined) return [`${name}_FILE`, undefined]
  if (env[name] !== undefined)
    throw configError(`${name}_FILE`, `set either ${name} or ${name}_FILE, not both`)
  try {
    return [`${name}_FILE`, readFileSync(path, 'utf8').replace(/\r?\n$/, '')]
  } catch (err) {
    throw configError(`${name}_FILE`, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`)
  }
}

function asString(v: unknown): unknown {
  if (Array.isArray(v)) return v.join(',')
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  return v
}
