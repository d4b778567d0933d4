import { isIP } from 'node:net'
import { dirname, join, resolve, sep } from 'node:path'
import { parseArgs } from 'node:util'
import { statSync } from '../builtins.js'
import { containerMemoryLimitSync } from '../cgroup-memory.js'
import { formatDuration, MAX_DURATION_MS } from '../duration.js'
import { parseFailpoints } from '../failpoints.js'
import {
  checkTemplate,
  roleCertPath,
  type TokenFileType,
  tokenFilePath,
  tokenTemplate,
} from '../identity/naming.js'
import { parseSubject } from '../identity/subject.js'
import { isAthenzName, parseTargets, type Target } from '../identity/targets.js'
import { SERVICES, type ServiceName } from '../services.js'
import { certificateStartMs } from '../start-deadline.js'
import { ADDRESS_OF } from './addresses.js'
import { configError } from './config-error.js'
import {
  checkBoundsFit,
  checkDerivedDeadlines,
  checkPortsApart,
  checkRestartTuning,
  containerFit,
} from './cross-checks.js'
import { DEFAULT_RESOURCE_LIMITS } from './limits.js'
import { parseYaml } from './parse-yaml.js'
import { readSmallFile } from './read-small-file.js'
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

/** Headers that frame, route or type an HTTP answer: never ROLE_AUTH_HEADER. */
const FRAMING_HEADERS = new Set([
  'connection',
  'content-encoding',
  'content-length',
  'content-type',
  'date',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])
/** TOKEN_CACHE_MAX_ENTRIES at most: ~4 KiB a token, far past what the token thread's heap holds. */
const MAX_TOKEN_CACHE_ENTRIES = 1_000_000

/**
 * Flags > environment > config file > defaults. Throws ERR_CONFIG naming the setting.
 * `memoryLimitBytes`: the container's memory limit (null: none), which the workers' heap limits
 * must fit in.
 */
export function loadConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  memoryLimitBytes: number | null = containerMemoryLimitSync((path) => readText(path) ?? ''),
): Invocation {
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
    // One line, as every config error (parseArgs explains an ambiguous value over three).
    throw configError('(command line)', `${(err as Error).message.replaceAll('\n', ' ')}; see --help`)
  }
  if (flags.help) return { kind: 'help' }
  if (flags.version) return { kind: 'version' }

  // `--config=$CFG` with CFG unset is a mistake; an empty SIA_CONFIG_FILE is none (a manifest's "").
  if (flags.config === '') throw configError('--config', 'empty path')
  const configPath = (flags.config as string | undefined) ?? env.SIA_CONFIG_FILE
  const file = configPath
    ? readConfigFile(configPath, flags.config === undefined ? 'SIA_CONFIG_FILE' : '--config')
    : {}

  const settings: Record<string, unknown> = {}
  const warnings: ConfigWarning[] = []
  // Where each value came from: an error names what the operator wrote (a flag, a variable, a
  // key in the file), and a check spanning two settings blames the one they gave.
  const origin = {} as Record<SettingKey, string>
  const given = new Set<SettingKey>()
  for (const key of KEYS) {
    const spec: SettingSpec = SETTINGS[key]
    const flag: [string, unknown] = [`--${flagName(key)}`, flags[flagName(key)]]
    // A flag comes first: the secret file behind a variable it overrides is not read (an
    // unreadable one was an exit 2 for a setting the flag gave).
    const sources: [string, unknown][] =
      flag[1] !== undefined
        ? [flag]
        : [
            [envName(key), env[envName(key)]],
            ...(spec.secret ? [secretFile(envName(key), env)] : []),
            [`${key} (in ${configPath})`, file[key]],
          ]
    const found = sources.find(([, v]) => v !== undefined)
    const [from, raw] = found ?? [envName(key), spec.default]
    origin[key] = from
    if (found) given.add(key)
    if (spec.secret && from.startsWith('--')) {
      warnings.push({
        setting: from,
        reason: `a secret given as a flag is visible to every user in ps; use ${envName(key)}_FILE`,
      })
    }
    const parsed = settingSchema(spec).safeParse(asString(raw, spec, from))
    if (!parsed.success) {
      const reason = parsed.error.issues[0]?.message ?? 'invalid value'
      throw configError(from, spec.secret ? reason.replaceAll(String(raw), '***') : reason)
    }
    settings[key] = parsed.data
  }
  const s = settings as Settings
  const named = (key: SettingKey) => origin[key]
  /**
   * Two settings that disagree: the error names the one the operator gave, and `first` when they
   * gave both or neither, each reason speaking of the other setting as they wrote it.
   */
  const disagree = (first: SettingKey, firstReason: string, second: SettingKey, secondReason: string) =>
    given.has(first) || !given.has(second)
      ? configError(named(first), firstReason)
      : configError(named(second), secondReason)
  if (s.endpoint !== '') {
    // The ZTS client speaks mutual TLS only; a bare host or an http:// URL would fail at every call.
    if (!URL.canParse(s.endpoint) || new URL(s.endpoint).protocol !== 'https:') {
      throw configError(named('endpoint'), `must be an https:// URL (got "${s.endpoint}")`)
    }
  }
  if (s.podIp !== '' && isIP(s.podIp) === 0) {
    // It becomes the certificate's IP SAN: a CSR with anything else fails at every refresh.
    throw configError(named('podIp'), `must be an IPv4 or IPv6 address (got "${s.podIp}")`)
  }
  // Empty: the working directory, as a relative path in it would be (`mkdir ''` failed each start
  // of the local authority, retried until the start deadline).
  s.dataDir ||= '.'
  const dataDir = (() => {
    try {
      return statSync(s.dataDir, { throwIfNoEntry: false })
    } catch (err) {
      throw configError(
        named('dataDir'),
        `cannot look at ${s.dataDir}: ${(err as NodeJS.ErrnoException).code ?? err}`,
      )
    }
  })()
  if (dataDir?.isDirectory() === false) {
    throw configError(named('dataDir'), `${s.dataDir} exists and is not a directory`)
  }
  if (!s.healthCheckEndpoint.startsWith('/')) {
    throw configError(named('healthCheckEndpoint'), 'must be a path starting with "/"')
  }
  // The health server answers readiness on /readyz: liveness there would hide it (200 while
  // shutting down). A query or fragment would never match a request's path.
  if (s.healthCheckEndpoint === '/readyz' || /[?#]/.test(s.healthCheckEndpoint)) {
    throw configError(named('healthCheckEndpoint'), 'must be a plain path other than /readyz')
  }
  // It is compared with the request's path as sent: a space or a non-ASCII character arrives
  // percent-encoded, and the liveness probe would get 404 for ever (the kubelet restarting the pod).
  if (!/^[A-Za-z0-9\-._~!$&'()*+,;=:@%/]+$/.test(s.healthCheckEndpoint)) {
    throw configError(
      named('healthCheckEndpoint'),
      `"${s.healthCheckEndpoint}" has characters a URL path carries percent-encoded: write them so`,
    )
  }
  // It names a response header: anything else fails every header-mode answer, and so does one
  // that frames or routes the answer (a Content-Length of a token broke every header-mode reply).
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(s.roleAuthHeader)) {
    throw configError(named('roleAuthHeader'), `"${s.roleAuthHeader}" is not an HTTP header name`)
  }
  if (FRAMING_HEADERS.has(s.roleAuthHeader.toLowerCase())) {
    throw configError(
      named('roleAuthHeader'),
      `"${s.roleAuthHeader}" frames the answer: name a header of your own`,
    )
  }
  // AlertManager trims the token it reads from its credentials file: so is ours (a secret file
  // with a trailing space or blank line answered every webhook 401, and alerts were dropped).
  const token = s.gatewayAuthToken
  s.gatewayAuthToken = token.trim()
  if (token !== '' && s.gatewayAuthToken === '') {
    throw configError(named('gatewayAuthToken'), 'is only whitespace: it would turn authentication off')
  }
  // What a header carries intact: visible ASCII (a bearer token is token68 in RFC 6750).
  if (s.gatewayAuthToken !== '' && !/^[!-~]+$/.test(s.gatewayAuthToken)) {
    throw configError(named('gatewayAuthToken'), 'must not hold whitespace, control or non-ASCII characters')
  }
  // lru-cache sets aside arrays of this length up front: ten million ended the process (a heap
  // exhausted at once is fatal to it, not to the thread) before a token was cached.
  if (s.tokenCacheMaxEntries > MAX_TOKEN_CACHE_ENTRIES) {
    throw configError(named('tokenCacheMaxEntries'), `must be at most ${MAX_TOKEN_CACHE_ENTRIES}`)
  }
  // As SIA: tokens that expire before the next refresh would leave the token files stale.
  if (s.tokenExpiry > 0 && s.tokenRefreshInterval >= s.tokenExpiry) {
    throw disagree(
      'tokenExpiry',
      `must be longer than ${named('tokenRefreshInterval')} (${formatDuration(s.tokenRefreshInterval)})`,
      'tokenRefreshInterval',
      `must be shorter than ${named('tokenExpiry')} (${formatDuration(s.tokenExpiry)})`,
    )
  }
  try {
    parseFailpoints(s.failpoints)
  } catch (err) {
    throw configError(named('failpoints'), (err as Error).message)
  }
  try {
    parseTargets(s.targetDomainRoles)
  } catch (err) {
    throw configError(named('targetDomainRoles'), (err as Error).message)
  }
  if (Boolean(s.tokenServerTlsCertPath) !== Boolean(s.tokenServerTlsKeyPath)) {
    const [missing, set] = s.tokenServerTlsCertPath
      ? (['tokenServerTlsKeyPath', 'tokenServerTlsCertPath'] as const)
      : (['tokenServerTlsCertPath', 'tokenServerTlsKeyPath'] as const)
    throw configError(named(missing), `required with ${named(set)} (the two go together)`)
  }
  if (s.tokenServerTlsCaPath && !s.tokenServerTlsCertPath) {
    throw configError(
      named('tokenServerTlsCaPath'),
      `mutual TLS needs ${named('tokenServerTlsCertPath')} and ${named('tokenServerTlsKeyPath')}`,
    )
  }
  // Deadlines of 0 would fail every start, call, request or write they bound.
  for (const key of [
    'httpHeaderTimeout',
    'httpRequestTimeout',
    'tokenCacheMaxEntries',
    'tokenCacheMaxBytes',
    'startTimeout',
    'tokenServerTimeout',
    'gatewayDedupTimeout',
    'gatewayDedupLease',
    'gatewaySinkTimeout',
    'metricsScrapeTimeout',
    'serviceCallTimeout',
    // No repeat would be a duplicate: deduplication off, silently.
    'gatewayDedupTtl',
    // Every webhook would be 413, which AlertManager does not retry: every alert dropped.
    'gatewayMaxBodyBytes',
  ] as const) {
    if (s[key] <= 0) throw configError(named(key), 'must be greater than 0')
  }
  if (s.delayJitterSeconds * 1000 > MAX_DURATION_MS) {
    throw configError(
      named('delayJitterSeconds'),
      `must be at most ${Math.floor(MAX_DURATION_MS / 1000)} (what a timer can hold)`,
    )
  }
  if (s.gatewayMaxBufferedBytes !== 0 && s.gatewayMaxBufferedBytes < s.gatewayMaxBodyBytes) {
    throw disagree(
      'gatewayMaxBufferedBytes',
      `must be 0 (no limit) or at least ${named('gatewayMaxBodyBytes')} (${s.gatewayMaxBodyBytes} bytes): a body of the largest size must fit`,
      'gatewayMaxBodyBytes',
      `must not be more than ${named('gatewayMaxBufferedBytes')} (${s.gatewayMaxBufferedBytes} bytes): a body of the largest size must fit`,
    )
  }
  if (s.httpHeaderTimeout > s.httpRequestTimeout) {
    throw disagree(
      'httpHeaderTimeout',
      `must not be longer than ${named('httpRequestTimeout')} (${formatDuration(s.httpRequestTimeout)})`,
      'httpRequestTimeout',
      `must not be shorter than ${named('httpHeaderTimeout')} (${formatDuration(s.httpHeaderTimeout)})`,
    )
  }
  // As SIA: USE_TOKEN_SERVER=false is no token server; token files configured are still written.
  if (!s.useTokenServer) s.tokenServerAddr = ''
  // Before identitySettings: no identity or token file may be written over them either.
  s.caCertFile ||= join(s.dataDir, 'ca.pem')
  s.gatewaySinkFile ||= join(s.dataDir, 'alerts.jsonl')
  const identity = identitySettings(s, named)
  if (s.redisUrl !== '') {
    try {
      parseRedisUrl(s.redisUrl)
    } catch (err) {
      throw configError(named('redisUrl'), (err as Error).message)
    }
  }
  if (s.gatewaySink === 'redis-stream' && s.redisUrl === '') {
    throw configError(named('gatewaySink'), 'redis-stream needs REDIS_URL')
  }
  if (s.backup !== '') {
    if (s.certSecret === '') throw configError(named('certSecret'), `required with BACKUP=${s.backup}`)
    if (!DNS1123_SUBDOMAIN.test(s.certSecret) || s.certSecret.length > 253) {
      throw configError(
        named('certSecret'),
        `"${s.certSecret}" is not a valid secret name (DNS-1123 subdomain)`,
      )
    }
    if (s.backupKubeApi === '' && !env.KUBERNETES_SERVICE_HOST) {
      throw configError(
        named('backupKubeApi'),
        'required with BACKUP outside a cluster (no KUBERNETES_SERVICE_HOST)',
      )
    }
    if (s.backupKubeApi !== '' && !/^https:\/\/[^/]/.test(s.backupKubeApi)) {
      throw configError(named('backupKubeApi'), `"${s.backupKubeApi}" is not an https:// URL`)
    }
    // The secret's namespace: NAMESPACE, else the service account's namespace file (backup.ts).
    if (s.namespace === '' && !readText(join(dirname(s.backupKubeTokenFile), 'namespace'))?.trim()) {
      throw configError(
        named('namespace'),
        `required with BACKUP when there is no namespace file beside ${s.backupKubeTokenFile}`,
      )
    }
  }
  if (s.namespace !== '' && !DNS1123_LABEL.test(s.namespace)) {
    throw configError(
      named('namespace'),
      `"${s.namespace}" is not a Kubernetes namespace name (DNS-1123 label)`,
    )
  }
  // Each goes into the resource's URL and body as it is: a plural of `signals?dryRun=All` would
  // make every create a dry run, answered 201 and stored nowhere.
  const kubeNames: [keyof typeof s, RegExp, string][] = [
    ['gatewayKubeNamespace', DNS1123_LABEL, 'a Kubernetes namespace name (DNS-1123 label)'],
    ['gatewayKubeGroup', DNS1123_SUBDOMAIN, 'an API group (DNS-1123 subdomain)'],
    ['gatewayKubeVersion', DNS1123_LABEL, 'an API version (DNS-1123 label, as v1alpha1)'],
    ['gatewayKubeKind', /^[A-Za-z][A-Za-z0-9]*$/, 'a kind (letters and digits, as AlertSignal)'],
    ['gatewayKubePlural', DNS1123_LABEL, 'a resource name (DNS-1123 label, as alertsignals)'],
  ]
  for (const [key, pattern, what] of kubeNames) {
    const value = String(s[key])
    if (value !== '' && (!pattern.test(value) || value.length > 253)) {
      throw configError(named(key), `"${value}" is not ${what}`)
    }
  }
  if (s.gatewayKubeApi !== '' && !/^https:\/\/[^/]/.test(s.gatewayKubeApi)) {
    throw configError(named('gatewayKubeApi'), `"${s.gatewayKubeApi}" is not an https:// URL`)
  }
  if (s.gatewaySink === 'kubernetes' && s.gatewayKubeApi === '' && !env.KUBERNETES_SERVICE_HOST) {
    throw configError(named('gatewayKubeApi'), 'required with GATEWAY_SINK=kubernetes outside a cluster')
  }

  const parsed = servicesSchema.safeParse(file.services ?? {})
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    // An unknown key's issue has the path of the mapping that holds it: the key is named too.
    const path = [
      ...(issue?.path ?? []),
      ...(issue?.code === 'unrecognized_keys' ? issue.keys.slice(0, 1) : []),
    ]
    throw configError(`${['services', ...path].join('.')} (in ${configPath})`, issue?.message ?? 'invalid')
  }
  const services = {} as Record<ServiceName, ServiceTuning>
  for (const name of SERVICES) {
    const addressKey = ADDRESS_OF[name]
    if (parsed.data[name]?.enabled === true && addressKey && s[addressKey] === '') {
      if (name !== 'token')
        throw configError(
          `services.${name}.enabled (in ${configPath})`,
          `true, but ${named(addressKey)} is empty`,
        )
      if (!writesTokenFiles(s))
        throw configError(
          `services.token.enabled (in ${configPath})`,
          `true, but there is no token server (${named(addressKey)} empty or ${named('useTokenServer')}=false) and no token files (TARGET_DOMAIN_ROLES with TOKEN_DIR or a naming format)`,
        )
    }
    services[name] = tuningFor(name, s, parsed.data[name] ?? {})
    checkRestartTuning(name, services[name], parsed.data[name] ?? {}, configPath)
    // SHUTDOWN_TIMEOUT (with SHUTDOWN_DELAY) bounds the whole shutdown (DESIGN.md §1): a service
    // given longer never has it, and may take all the services stopped after it are owed.
    if (services[name].shutdownTimeout > s.shutdownTimeout) {
      warnings.push({
        setting: `services.${name}.shutdownTimeout (in ${configPath})`,
        reason: `longer than ${named('shutdownTimeout')} (${s.shutdownTimeout / 1000}s), which bounds the whole shutdown: it gets at most that, and the services stopped after it what it leaves`,
      })
    }
  }
  // A lease that can run out during a write the sink is still allowed to finish lets another
  // request (a retry, the HA peer) take the alert and write it again: at least once still, but no
  // longer exactly once when the sink is merely slow.
  if (services.gateway.enabled && s.gatewayDedupLease <= s.gatewaySinkTimeout) {
    warnings.push({
      setting: named('gatewayDedupLease'),
      reason: `not longer than ${named('gatewaySinkTimeout')} (${formatDuration(s.gatewaySinkTimeout)}): a lease that runs out during a slow sink write lets another request write the alert again`,
    })
  }
  const checked = { s, services, file: parsed.data, named, given, configPath }
  checkPortsApart(checked)
  checkDerivedDeadlines(checked)
  if (s.mode !== 'init') {
    checkBoundsFit(checked)
    const fit = containerFit(services, parsed.data, memoryLimitBytes, configPath)
    if (fit?.refuse) throw configError(fit.setting, fit.reason)
    if (fit) warnings.push({ setting: fit.setting, reason: fit.reason })
  }
  return { kind: 'run', config: { ...s, ...identity, services }, warnings }
}

const paths = (list: string) =>
  list
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
const DNS_NAME =
  /^(\*\.)?[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/
const DNS_LABEL = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/

/**
 * SIA's identity settings, derived and checked: the Athenz domain (ATHENZ_PREFIX + ATHENZ_DOMAIN
 * or NAMESPACE + ATHENZ_SUFFIX), the subject and extra SANs, the naming templates, and the
 * comma-separated KEY_FILE/CERT_FILE. Fills `s` in place; returns the derived lists.
 */
function identitySettings(
  s: Settings,
  named: (key: SettingKey) => string,
): { keyFiles: string[]; certFiles: string[] } {
  // As SIA's NamespaceToDomain: prefix + (domain or namespace) + suffix, without a leading or
  // trailing dot. With neither (outside Kubernetes) the embedded default.
  const from = s.athenzDomain ? 'athenzDomain' : 'namespace'
  const base = s.athenzDomain || s.namespace
  if (base === '' && s.athenzPrefix === '' && s.athenzSuffix === '') {
    s.athenzDomain = 'sia.local'
  } else {
    s.athenzDomain = `${s.athenzPrefix}${base}${s.athenzSuffix}`.replace(/^\./, '').replace(/\.$/, '')
    if (!isAthenzName(s.athenzDomain)) {
      throw configError(
        named(from),
        `the Athenz domain "${s.athenzDomain}" (ATHENZ_PREFIX + ${named(from)} + ATHENZ_SUFFIX) is not an Athenz name`,
      )
    }
  }
  // A ZTS SimpleName: it goes into the /cacerts/{name} path.
  if (s.intermediateCertBundle && !/^[a-zA-Z0-9_][a-zA-Z0-9_-]*$/.test(s.intermediateCertBundle)) {
    throw configError(
      named('intermediateCertBundle'),
      `"${s.intermediateCertBundle}" is not a CA bundle name ([a-zA-Z0-9_][a-zA-Z0-9_-]*)`,
    )
  }
  if (!isAthenzName(s.serviceAccount)) {
    throw configError(named('serviceAccount'), `"${s.serviceAccount}" is not an Athenz service name`)
  }
  if (s.certSubject) {
    try {
      parseSubject(s.certSubject)
    } catch (err) {
      throw configError(named('certSubject'), (err as Error).message)
    }
  }
  // Both go into the certificate's default SANs: a CSR with a bad one fails at every refresh.
  // A fully qualified name's final dot is not part of a SAN: dropped, as `cluster.local.` is meant.
  s.dnsSuffix = s.dnsSuffix.replace(/\.$/, '')
  if (!DNS_NAME.test(s.dnsSuffix) || s.dnsSuffix.startsWith('*.') || s.dnsSuffix.length > 253) {
    throw configError(named('dnsSuffix'), `"${s.dnsSuffix}" is not a DNS name`)
  }
  if (s.podUid !== '' && !DNS_LABEL.test(s.podUid)) {
    throw configError(named('podUid'), `"${s.podUid}" is not a DNS label (a pod's UID is one)`)
  }
  for (const name of s.certExtraSanDns) {
    if (!DNS_NAME.test(name) || name.length > 253) {
      throw configError(named('certExtraSanDns'), `"${name}" is not a DNS name`)
    }
  }

  const keyFiles = paths(s.keyFile)
  const certFiles = paths(s.certFile)
  if (keyFiles.length === 0) keyFiles.push(join(s.dataDir, 'key.pem'))
  if (certFiles.length === 0) certFiles.push(join(s.dataDir, 'cert.pem'))
  s.keyFile = keyFiles[0]!
  s.certFile = certFiles[0]!

  // ROLECERT_DIR and the role certificate templates say the same thing two ways: as SIA, one only.
  for (const key of ['roleCertNamingFormat', 'roleCertKeyNamingFormat'] as const) {
    if (s[key] && s.roleCertDir) {
      throw configError(named(key), `${named(key)} and ROLECERT_DIR cannot both be set`)
    }
  }
  s.roleCertDir ||= s.dataDir
  const templates = [
    'roleCertNamingFormat',
    'roleCertKeyNamingFormat',
    'accessTokenNamingFormat',
    'roleTokenNamingFormat',
  ] as const
  for (const key of templates) {
    try {
      checkTemplate(s[key])
    } catch (err) {
      throw configError(named(key), (err as Error).message)
    }
  }
  for (const key of [
    'roleCertFilenameDelimiter',
    'accessTokenFilenameDelimiter',
    'roleTokenFilenameDelimiter',
  ] as const) {
    if (s[key].includes('\0')) throw configError(named(key), 'a NUL character')
  }
  // No two outputs share a file: each would overwrite the other's at every refresh (two targets'
  // tokens, a role token over a role certificate or over the service's key).
  const targets = parseTargets(s.targetDomainRoles)
  const cfg = s as unknown as Config
  // A token file of a type TOKEN_TYPE leaves out is never written.
  const tokenFile = (t: Target, type: TokenFileType) =>
    s.tokenType.split('+').includes(type) ? tokenFilePath(cfg, t, type) : undefined
  const outputs: [SettingKey, string, (t: Target) => string | undefined][] = [
    ['roleCertNamingFormat', 'role certificate', (t) => roleCertPath(cfg, t)],
    [
      'roleCertKeyNamingFormat',
      'role certificate key',
      (t) => (s.roleCertKeyFileOutput ? roleCertPath(cfg, t, 'key') : undefined),
    ],
    ['accessTokenNamingFormat', 'access token', (t) => tokenFile(t, 'accesstoken')],
    ['roleTokenNamingFormat', 'role token', (t) => tokenFile(t, 'roletoken')],
  ]
  const written = new Map<string, { key: SettingKey; what: string }>()
  // The local authority's directory (the local provider's) is replaced whole when it is made
  // anew: nothing else in it.
  const authority = s.endpoint === '' ? resolve(s.dataDir, 'authority') : undefined
  const claim = (key: SettingKey, path: string, what: string) => {
    const at = resolve(path)
    if (authority && (at === authority || at.startsWith(`${authority}${sep}`)))
      throw configError(
        named(key),
        `${what} would be written inside the local authority's directory ${authority}`,
      )
    const other = written.get(at)
    if (other && other.what === what) return // the same file listed twice: written once
    if (other) {
      const hint =
        other.key === key && templates.includes(key as never) ? ': use {{domain}} and {{role}}' : ''
      throw configError(named(key), `${other.what} and ${what} would both be written to ${path}${hint}`)
    }
    written.set(at, { key, what })
  }
  // With the files provider the key, certificate and CA are read, never written: one PEM may hold
  // them all (one name for the three, so they never clash), and no output may be written over it.
  const files = s.endpoint !== '' && s.providerService === ''
  const read = 'the identity the files provider reads (KEY_FILE, CERT_FILE, CA_CERT_FILE)'
  for (const path of keyFiles) claim('keyFile', path, files ? read : 'the service key (KEY_FILE)')
  for (const path of certFiles) claim('certFile', path, files ? read : 'the service certificate (CERT_FILE)')
  claim('caCertFile', s.caCertFile, files ? read : 'the CA certificate (CA_CERT_FILE)')
  if (s.gatewayAddr !== '' && s.gatewaySink === 'file')
    claim('gatewaySinkFile', s.gatewaySinkFile, "the gateway's alerts (GATEWAY_SINK_FILE)")
  for (const [key, label, path] of outputs) {
    for (const t of targets) {
      const p = path(t)
      if (p !== undefined) claim(key, p, `${t.domain}:role.${t.role}'s ${label}`)
    }
  }
  return { keyFiles, certFiles }
}

/**
 * Token files of the targets are configured (TOKEN_DIR or a naming format, of a TOKEN_TYPE): the
 * token service writes and refreshes them with no token server too, as SIA's.
 */
function writesTokenFiles(s: Settings): boolean {
  const cfg = s as unknown as Config
  return (
    parseTargets(s.targetDomainRoles).length > 0 &&
    (s.tokenType.split('+') as TokenFileType[]).some((type) => tokenTemplate(cfg, type) !== undefined)
  )
}

function tuningFor(name: ServiceName, s: Settings, t: TuningInput): ServiceTuning {
  const addressKey = ADDRESS_OF[name]
  const listens = addressKey === undefined || s[addressKey] !== ''
  return {
    enabled: t.enabled ?? (listens || (name === 'token' && writesTokenFiles(s))),
    // The certificate service may wait up to DELAY_JITTER_SECONDS before its boot fetch.
    startTimeout:
      name === 'certificate'
        ? certificateStartMs(t.startTimeout ?? s.startTimeout, s.delayJitterSeconds)
        : (t.startTimeout ?? s.startTimeout),
    shutdownTimeout: t.shutdownTimeout ?? s.shutdownTimeout,
    // Field by field: a file setting only stackSizeMb (or only the old generation) dropped the
    // other defaults, and V8 then sized that worker's heap from the host's memory (4 GiB here).
    resourceLimits: { ...DEFAULT_RESOURCE_LIMITS[name], ...t.resourceLimits },
    restart: t.restart ?? 'permanent',
    maxRestarts: t.maxRestarts ?? 5,
    restartWindow: t.restartWindow ?? 60_000,
    restartBackoff: t.restartBackoff ?? 100,
    restartBackoffMax: t.restartBackoffMax ?? 15_000,
    watchdogTimeout: t.watchdogTimeout ?? 10_000,
    recycleAtPercent: t.recycleAtPercent ?? 90,
  }
}

/**
 * A setting's value as the environment would give it: where YAML read a number or a boolean, the
 * text that was written. `String()` of what YAML read is not always that text: `0123` became 123,
 * `0x1F` 31, a 20-digit number another one, and a token, password or name silently another.
 */
function asWritten(typed: unknown, written: unknown): unknown {
  const scalar = (v: unknown) => typeof v === 'number' || typeof v === 'boolean'
  if (scalar(typed)) return written
  // A list's items, one level: a setting's list holds text.
  if (Array.isArray(typed) && Array.isArray(written)) return typed.map((v, i) => (scalar(v) ? written[i] : v))
  return typed
}

/** `from`: where the path was given (`--config` or SIA_CONFIG_FILE), named in its errors. */
function readConfigFile(path: string, from: string): Record<string, unknown> {
  const text = readUtf8(path, from)
  let doc: unknown
  let written: Record<string, unknown>
  try {
    // YAML is a superset of JSON: one parser for both.
    const parsed = parseYaml(text, (key) => key === 'services' || Object.hasOwn(SETTINGS, key))
    doc = parsed.typed ?? {}
    written = (parsed.written ?? {}) as Record<string, unknown>
  } catch (err) {
    const { code, key } = err as { code?: string; key?: string }
    // Any other error's message may quote the file, as the parser's did: not repeated.
    const reason = code === 'ERR_CONFIG_YAML' ? (err as Error).message : (err as Error).name
    if (key !== undefined) throw configError(`${key} (in ${path})`, reason)
    throw configError(from, `${path} is not valid JSON or YAML: ${reason}`)
  }
  if (typeof doc !== 'object' || Array.isArray(doc)) throw configError(from, `${path} must hold a mapping`)
  const proto = protoKey(doc)
  if (proto) throw configError(`${proto} (in ${path})`, 'unknown setting')
  const record: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
    if (key !== 'services' && !Object.hasOwn(SETTINGS, key))
      throw configError(`${key} (in ${path})`, 'unknown setting')
    // `services` is typed (enabled: false, maxRestarts: 5); a setting is text, as in the environment.
    record[key] = key === 'services' ? value : asWritten(value, written[key])
  }
  return record
}

/**
 * The path of a `__proto__` key anywhere in the file: YAML and JSON keep it as a key, and the
 * schema's records and objects pass over it in silence (a service's tuning under it was ignored).
 */
function protoKey(v: unknown, path: readonly string[] = []): string | undefined {
  // No node holds itself: the file has no aliases (parse-yaml.ts).
  if (typeof v !== 'object' || v === null) return undefined
  for (const [k, x] of Object.entries(v)) {
    const found = k === '__proto__' ? [...path, k].join('.') : protoKey(x, [...path, k])
    if (found) return found
  }
  return undefined
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
  const value = readUtf8(path, `${name}_FILE`).replace(/\r?\n$/, '')
  // An empty secret would turn what it guards off (GATEWAY_AUTH_TOKEN: no auth at all).
  if (value === '') throw configError(`${name}_FILE`, `${path} is empty`)
  return [`${name}_FILE`, value]
}

/**
 * A file's text, from a regular file of at most MAX_FILE_BYTES (read-small-file.ts: a FIFO held the
 * main thread past SIGTERM). Bytes that are not UTF-8 are an error: decoded leniently, each became
 * U+FFFD, and a path or a password other than the one written was used without a word.
 */
function readUtf8(path: string, from: string): string {
  let bytes: Buffer
  try {
    bytes = readSmallFile(path)
  } catch (err) {
    const { code } = err as NodeJS.ErrnoException
    if (code === 'ERR_NOT_REGULAR_FILE' || code === 'ERR_FILE_TOO_LARGE')
      throw configError(from, (err as Error).message)
    throw configError(from, `cannot read ${path}: ${code ?? err}`)
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    throw configError(from, `${path} is not UTF-8`)
  }
}

/** A value as the string the environment would give: a YAML list only where a setting takes several. */
function asString(v: unknown, spec: SettingSpec, from: string): unknown {
  if (!Array.isArray(v)) return v
  if (spec.kind !== 'list' && !spec.several) throw configError(from, 'expected one value, not a list')
  if (!v.every((x) => typeof x === 'string')) throw configError(from, 'every item must be a string')
  return v.join(',')
}

/** A file's text, or undefined when it cannot be read (or is no small regular file). */
function readText(path: string): string | undefined {
  try {
    return readSmallFile(path).toString('utf8')
  } catch {
    return undefined
  }
}
