import { defaultMaxConnections } from './limits.js'

/**
 * Every top-level setting: its kind, default and help. The environment variable is the key in
 * SCREAMING_SNAKE_CASE (SIA's names), the flag is the key in kebab-case, and a config file uses the
 * key itself. Empty defaults that name a file are filled in under DATA_DIR by `load.ts`.
 */
export type Kind = 'string' | 'duration' | 'interval' | 'int' | 'bool' | 'address' | 'list' | 'path'

export interface SettingSpec {
  kind: Kind
  default: string
  help: string
  /** Allowed values for a `string` setting, matched whatever their case. */
  values?: readonly string[]
  /** Other names of `values` (lower case), as SIA's own parsers accept them. */
  aliases?: Readonly<Record<string, string>>
  /** The environment variable, when it is not the key in SCREAMING_SNAKE_CASE. */
  env?: string
  /** Never echoed back in errors or logs. */
  secret?: boolean
  /** Comma-separated values (as every `list`): the config file may give them as a YAML list. */
  several?: boolean
}

export const SETTINGS = {
  mode: {
    kind: 'string',
    default: 'refresh',
    values: ['refresh', 'init'],
    help: 'refresh: run the daemons; init: fetch once and exit',
  },
  endpoint: {
    kind: 'string',
    default: '',
    help: 'Athenz ZTS URL; empty selects the embedded local authority',
  },
  providerService: {
    kind: 'string',
    default: '',
    help: 'Athenz provider service for instance register/refresh',
  },
  athenzDomain: {
    kind: 'string',
    default: '',
    help: 'Athenz domain of this workload (empty: NAMESPACE; both empty: sia.local); ATHENZ_PREFIX + it + ATHENZ_SUFFIX',
  },
  athenzPrefix: { kind: 'string', default: '', help: 'prefix of the Athenz domain, as in SIA' },
  athenzSuffix: { kind: 'string', default: '', help: 'suffix of the Athenz domain, as in SIA' },
  namespace: {
    kind: 'string',
    default: '',
    help: 'Kubernetes namespace of the pod: the Athenz domain when ATHENZ_DOMAIN is empty, the backup secret, metric labels',
  },
  podName: {
    kind: 'string',
    default: '',
    help: 'Kubernetes pod name, as the k8s_pod label of token metrics',
  },
  serviceAccount: {
    kind: 'string',
    default: 'workload',
    env: 'SERVICEACCOUNT',
    help: 'Athenz service name of this workload',
  },
  dnsSuffix: {
    kind: 'string',
    default: 'athenz.cloud',
    help: 'DNS suffix for the SAN of the service certificate',
  },
  podIp: { kind: 'string', default: '127.0.0.1', help: 'Pod IP, added to the certificate as a SAN IP' },
  dataDir: { kind: 'path', default: '.local', help: 'directory for the local authority and default files' },
  keyFile: {
    kind: 'path',
    several: true,
    default: '',
    help: 'service private key; comma-separated: every path written, the first read (default DATA_DIR/key.pem)',
  },
  certFile: {
    kind: 'path',
    several: true,
    default: '',
    help: 'service certificate; comma-separated: every path written, the first read (default DATA_DIR/cert.pem)',
  },
  certSubject: {
    kind: 'string',
    default: '',
    help: 'subject of the service certificate besides CN, RFC 4514 (e.g. "OU=Athenz,O=Example,C=US"; default OU=Athenz,C=US)',
  },
  certExtraSanDns: {
    kind: 'list',
    default: '',
    help: 'comma-separated extra DNS SANs of the service certificate',
  },
  caCertFile: { kind: 'path', default: '', help: 'CA certificate (default DATA_DIR/ca.pem)' },
  roleCertDir: {
    kind: 'path',
    default: '',
    env: 'ROLECERT_DIR',
    help: 'directory for role certificates (default DATA_DIR); not with ROLE_CERT_NAMING_FORMAT',
  },
  roleCertFilenameDelimiter: {
    kind: 'string',
    default: ':role.',
    help: 'delimiter between domain and role in role cert file names',
  },
  roleCertNamingFormat: {
    kind: 'path',
    default: '',
    help: 'role certificate path template with {{domain}}, {{role}}, {{delimiter}} (default ROLECERT_DIR/{{domain}}{{delimiter}}{{role}}.cert.pem)',
  },
  roleCertKeyNamingFormat: {
    kind: 'path',
    default: '',
    help: 'role certificate key path template (default: beside the role certificate, {{domain}}{{delimiter}}{{role}}.key.pem)',
  },
  refreshInterval: { kind: 'interval', default: '24h', help: 'certificate refresh interval (0: no refresh)' },
  delayJitterSeconds: {
    kind: 'int',
    default: '0',
    help: 'random delay before the first refresh, in seconds',
  },
  targetDomainRoles: {
    kind: 'list',
    default: '',
    help: 'comma-separated <domain>:role.<role> for role certs and tokens',
  },
  tokenServerAddr: {
    kind: 'address',
    default: '127.0.0.1:8880',
    help: 'token server address; empty disables the token service',
  },
  useTokenServer: {
    kind: 'bool',
    default: 'true',
    help: 'false: no token server, as in SIA (the target token files are still written)',
  },
  tokenServerRestApi: {
    kind: 'bool',
    default: 'true',
    help: 'serve POST /roletoken and /accesstoken (false: header mode only)',
  },
  tokenRefreshInterval: {
    kind: 'interval',
    default: '30m',
    help: 'token cache refresh interval (0: no refresh)',
  },
  tokenServerTimeout: { kind: 'duration', default: '10s', help: 'token server handler timeout' },
  tokenExpiry: {
    kind: 'duration',
    default: '0',
    help: 'token expiry requested upstream (0: server default)',
  },
  tokenAllowProxyForPrincipal: {
    kind: 'bool',
    default: 'false',
    help: 'local authority: honour proxy_for_principal (then any caller gets tokens for any principal)',
  },
  tokenDir: { kind: 'path', default: '', help: 'directory for token files (empty: none)' },
  accessTokenNamingFormat: {
    kind: 'path',
    default: '',
    help: 'access token file path template with {{domain}}, {{role}}, {{delimiter}} (default TOKEN_DIR/{{domain}}{{delimiter}}{{role}}.accesstoken)',
  },
  accessTokenFilenameDelimiter: {
    kind: 'string',
    default: ':role.',
    help: '{{delimiter}} of ACCESS_TOKEN_NAMING_FORMAT',
  },
  roleTokenNamingFormat: {
    kind: 'path',
    default: '',
    help: 'role token file path template with {{domain}}, {{role}}, {{delimiter}} (default TOKEN_DIR/{{domain}}{{delimiter}}{{role}}.roletoken)',
  },
  roleTokenFilenameDelimiter: {
    kind: 'string',
    default: ':role.',
    help: '{{delimiter}} of ROLE_TOKEN_NAMING_FORMAT',
  },
  tokenType: {
    kind: 'string',
    default: 'roletoken+accesstoken',
    values: ['roletoken', 'accesstoken', 'roletoken+accesstoken', 'accesstoken+roletoken'],
    help: 'token types the token service fetches and serves',
  },
  roleAuthHeader: {
    kind: 'string',
    default: 'Athenz-Role-Auth',
    help: 'response header that carries the role token in header mode (an HTTP header name)',
  },
  tokenCacheIdleEvict: {
    kind: 'interval',
    default: '2h',
    help: 'drop a cached token unused for this long (0: never; targets are never dropped)',
  },
  tokenCacheMaxEntries: {
    kind: 'int',
    default: '10000',
    help: 'tokens each cache (role, access) holds at most (up to 1000000); the least recently used go first',
  },
  tokenCacheMaxBytes: {
    kind: 'int',
    default: '16777216',
    help: 'bytes of tokens (and their keys) each cache holds at most; the least recently used go first',
  },
  tokenServerTlsCertPath: {
    kind: 'path',
    default: '',
    help: 'token server TLS certificate (empty: plain HTTP)',
  },
  tokenServerTlsKeyPath: { kind: 'path', default: '', help: 'token server TLS private key' },
  tokenServerTlsCaPath: {
    kind: 'path',
    default: '',
    help: 'CA for token server client certificates (set: mutual TLS required)',
  },
  deleteInstanceId: {
    kind: 'bool',
    default: 'false',
    help: 'delete the instance record at ZTS on shutdown',
  },
  intermediateCertBundle: {
    kind: 'string',
    default: '',
    help: 'name of a ZTS CA bundle (GET /cacerts/{name}) appended to the service certificate file',
  },
  roleCertKeyFileOutput: {
    kind: 'bool',
    default: 'false',
    help: 'also write each role certificate key as <domain><delimiter><role>.key.pem',
  },
  backup: {
    kind: 'string',
    default: '',
    values: ['', 'read', 'write', 'read+write'],
    help: 'backup of the service certificate in the Kubernetes secret CERT_SECRET: read (on boot, when the provider fails), write (after each issue), read+write',
  },
  certSecret: {
    kind: 'string',
    default: '',
    help: 'name of the kubernetes.io/tls secret of BACKUP, in NAMESPACE',
  },
  backupKubeApi: {
    kind: 'string',
    default: '',
    help: 'API server URL for BACKUP (empty: in-cluster KUBERNETES_SERVICE_HOST/PORT)',
  },
  backupKubeTokenFile: {
    kind: 'path',
    default: '/var/run/secrets/kubernetes.io/serviceaccount/token',
    help: "bearer token file for BACKUP (re-read on every call); its directory's namespace file when NAMESPACE is empty",
  },
  backupKubeCaFile: {
    kind: 'path',
    default: '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt',
    help: 'CA bundle of the API server for BACKUP',
  },
  podUid: {
    kind: 'string',
    default: '',
    help: 'instance id of this workload in the certificate (empty: the host name)',
  },
  saTokenFile: {
    kind: 'path',
    default: '',
    help: 'service account token sent to ZTS as attestation data at instance register',
  },
  serverCaCert: { kind: 'path', default: '', help: 'CA bundle to verify the ZTS server (empty: system CAs)' },
  gatewayAddr: {
    kind: 'address',
    default: ':8080',
    help: 'AlertManager webhook gateway address; empty disables it',
  },
  redisUrl: {
    kind: 'string',
    default: '',
    secret: true,
    help: 'Redis URL for gateway deduplication (empty: in memory)',
  },
  redisSentinelPassword: {
    kind: 'string',
    default: '',
    secret: true,
    help: "password of the Sentinels of a redis+sentinel:// REDIS_URL (the URL password is the master's)",
  },
  gatewayMaxBodyBytes: {
    kind: 'int',
    default: '1048576',
    help: 'largest webhook body the gateway reads; larger ones get 413',
  },
  gatewayDedupTtl: {
    kind: 'duration',
    default: '5m',
    help: 'how long a fingerprint stays a duplicate after it was last seen (sliding)',
  },
  gatewayDedupLease: {
    kind: 'duration',
    default: '15s',
    help: 'lease on a new alert until its sink write commits; a dead writer blocks retries this long',
  },
  gatewayDedupMaxEntries: {
    kind: 'int',
    default: '100000',
    help: 'committed fingerprints the in-memory dedup store keeps, besides the alerts being written; the least recently seen go first (0: no cap)',
  },
  gatewayDedupTimeout: {
    kind: 'duration',
    default: '2s',
    help: 'longest wait for the dedup store before a request gets 503',
  },
  gatewaySink: {
    kind: 'string',
    default: 'file',
    values: ['file', 'redis-stream', 'kubernetes'],
    help: 'where new alerts go: file, redis-stream or kubernetes',
  },
  gatewaySinkTimeout: {
    kind: 'duration',
    default: '10s',
    help: 'longest wait for the sink to take a batch; past it the request gets 503 and the gateway is not ready until the sink takes writes again',
  },
  gatewaySinkFile: {
    kind: 'path',
    default: '',
    help: 'JSON-lines file of the file sink (default DATA_DIR/alerts.jsonl)',
  },
  gatewayAuthToken: {
    kind: 'string',
    default: '',
    secret: true,
    help: 'bearer token webhook senders must present, trimmed as AlertManager trims it (empty: no auth)',
  },
  gatewayMaxBufferedBytes: {
    kind: 'int',
    default: '16777216',
    help: 'request body bytes the gateway holds at once, arriving or being stored; past it the largest body still arriving is cut off with 503 (0: no limit; else at least GATEWAY_MAX_BODY_BYTES)',
  },
  gatewayMaxInflight: {
    kind: 'int',
    default: '256',
    help: 'webhook requests processed at once; more get 503 (0: no limit)',
  },
  gatewayFingerprintLabels: {
    kind: 'list',
    default: '',
    help: "labels hashed into the fingerprint (empty: AlertManager's fingerprint, else all labels)",
  },
  gatewayRecordResolved: {
    kind: 'bool',
    default: 'true',
    help: 'record resolved alerts as the resolution of their fingerprint (false: ignore them)',
  },
  gatewayStreamKey: { kind: 'string', default: 'sia:alerts', help: 'Redis stream of the redis-stream sink' },
  gatewayStreamMaxlen: {
    kind: 'int',
    default: '0',
    help: 'entries the redis-stream sink keeps, the oldest trimmed as it appends (XADD MAXLEN; 0: no trimming)',
  },
  gatewayKubeApi: {
    kind: 'string',
    default: '',
    help: 'API server URL of the kubernetes sink (empty: in-cluster KUBERNETES_SERVICE_HOST)',
  },
  gatewayKubeTokenFile: {
    kind: 'path',
    default: '/var/run/secrets/kubernetes.io/serviceaccount/token',
    help: 'bearer token file for the API server (re-read on every write)',
  },
  gatewayKubeCaFile: {
    kind: 'path',
    default: '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt',
    help: 'CA bundle that signed the API server certificate',
  },
  gatewayKubeNamespace: {
    kind: 'string',
    default: '',
    help: "namespace of the custom resources (empty: the pod's own, else default)",
  },
  gatewayKubeGroup: { kind: 'string', default: 'sia.athenz.io', help: 'API group of the alert resource' },
  gatewayKubeVersion: { kind: 'string', default: 'v1alpha1', help: 'API version of the alert resource' },
  gatewayKubeKind: { kind: 'string', default: 'AlertSignal', help: 'kind of the alert resource' },
  gatewayKubePlural: {
    kind: 'string',
    default: '',
    help: 'resource plural in the REST path (empty: lower-case kind + "s")',
  },
  httpHeaderTimeout: {
    kind: 'duration',
    default: '10s',
    help: 'every server: request line and headers must arrive within this (else 408, connection closed)',
  },
  httpRequestTimeout: {
    kind: 'duration',
    default: '30s',
    help: 'every server: the whole request, body included, must arrive within this (else 408)',
  },
  httpMaxConnections: {
    kind: 'int',
    default: String(defaultMaxConnections()),
    help: 'every server: connections held at once, more are closed as they come (default: 1/8 of the open-file limit, at most 4096; 0: no limit)',
  },
  metricsServerAddr: {
    kind: 'address',
    default: ':9999',
    help: 'Prometheus metrics address; empty disables it',
  },
  metricsScrapeTimeout: { kind: 'duration', default: '2s', help: 'how long a scrape waits for each worker' },
  serviceCallTimeout: {
    kind: 'duration',
    default: '5s',
    help: 'deadline of a call from one service to another (its own, when the caller sets none)',
  },
  healthCheckAddr: { kind: 'address', default: ':9998', help: 'health check address; empty disables it' },
  healthCheckEndpoint: {
    kind: 'string',
    default: '/healthz',
    help: 'liveness path on the health check address',
  },
  memoryReportInterval: {
    kind: 'interval',
    default: '60s',
    help: 'interval between memory reports (0: no reports)',
  },
  shutdownTimeout: { kind: 'duration', default: '30s', help: 'default per-service shutdown deadline' },
  shutdownDelay: { kind: 'duration', default: '0', help: 'wait after readiness drops, before services stop' },
  startTimeout: { kind: 'duration', default: '30s', help: 'default per-service start deadline' },
  logDir: {
    kind: 'path',
    default: '',
    help: 'also write the log lines to <dir>/sia-supervisor.<LOG_LEVEL>.log, rotated at 1 MB, 5 kept (empty: stdout only)',
  },
  logLevel: {
    kind: 'string',
    default: 'info',
    values: ['trace', 'debug', 'info', 'warn', 'error', 'fatal'],
    // SIA's levels (logrus): INFO is its default, and `warning` and `panic` are its names too.
    aliases: { warning: 'warn', panic: 'fatal' },
    help: 'log level',
  },
  failpoints: {
    kind: 'string',
    default: '',
    env: 'SIA_FAILPOINTS',
    help: 'fault injection, name=action[;…] (DESIGN.md §3)',
  },
} as const satisfies Record<string, SettingSpec>

export type SettingKey = keyof typeof SETTINGS

export function envName(key: SettingKey): string {
  const spec: SettingSpec = SETTINGS[key]
  return spec.env ?? key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()
}

export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
}
