import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { defaultMaxConnections } from '../shared/config/limits.js'
import { loadConfig } from '../shared/config/load.js'
import type { Config } from '../shared/config/types.js'
import { parseDuration } from '../shared/duration.js'
import { CLI, startSidecar, stop } from './support/sidecar.js'

/** Every environment variable of k8s-athenz-sia v3 (MODE=refresh and init). */
const SIA_VARIABLES = [
  'MODE',
  'ENDPOINT',
  'PROVIDER_SERVICE',
  'DNS_SUFFIX',
  'REFRESH_INTERVAL',
  'DELAY_JITTER_SECONDS',
  'KEY_FILE',
  'CERT_FILE',
  'CA_CERT_FILE',
  'INTERMEDIATE_CERT_BUNDLE',
  'BACKUP',
  'CERT_SECRET',
  'NAMESPACE',
  'ATHENZ_DOMAIN',
  'ATHENZ_PREFIX',
  'ATHENZ_SUFFIX',
  'SERVICEACCOUNT',
  'SA_TOKEN_FILE',
  'POD_IP',
  'POD_UID',
  'POD_NAME',
  'SERVER_CA_CERT',
  'TARGET_DOMAIN_ROLES',
  'ROLECERT_DIR',
  'ROLE_CERT_FILENAME_DELIMITER',
  'ROLE_CERT_KEY_FILE_OUTPUT',
  'ROLE_CERT_NAMING_FORMAT',
  'ROLE_CERT_KEY_NAMING_FORMAT',
  'ROLE_AUTH_HEADER',
  'TOKEN_TYPE',
  'TOKEN_REFRESH_INTERVAL',
  'TOKEN_EXPIRY',
  'TOKEN_SERVER_ADDR',
  'TOKEN_SERVER_REST_API',
  'TOKEN_SERVER_TIMEOUT',
  'TOKEN_SERVER_TLS_CA_PATH',
  'TOKEN_SERVER_TLS_CERT_PATH',
  'TOKEN_SERVER_TLS_KEY_PATH',
  'TOKEN_DIR',
  'ACCESS_TOKEN_NAMING_FORMAT',
  'ACCESS_TOKEN_FILENAME_DELIMITER',
  'ROLE_TOKEN_NAMING_FORMAT',
  'ROLE_TOKEN_FILENAME_DELIMITER',
  'METRICS_SERVER_ADDR',
  'HEALTH_CHECK_ADDR',
  'HEALTH_CHECK_ENDPOINT',
  'DELETE_INSTANCE_ID',
  'USE_TOKEN_SERVER',
  'SHUTDOWN_TIMEOUT',
  'SHUTDOWN_DELAY',
  'LOG_DIR',
  'LOG_LEVEL',
  'CERT_SUBJECT',
  'CERT_EXTRA_SAN_DNS',
]

function file(name: string, text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'sia-cfg-')), name)
  writeFileSync(path, text)
  return path
}

function config(argv: string[], env: Record<string, string> = {}): Config {
  const inv = loadConfig(argv, env)
  assert.equal(inv.kind, 'run')
  return (inv as { config: Config }).config
}

function rejects(argv: string[], env: Record<string, string>, setting: RegExp): void {
  assert.throws(
    () => loadConfig(argv, env),
    (err: Error & { code?: string }) => err.code === 'ERR_CONFIG' && setting.test(err.message),
  )
}

describe('durations', () => {
  test('Go syntax', () => {
    assert.equal(parseDuration('24h'), 86_400_000)
    assert.equal(parseDuration('1m30s'), 90_000)
    assert.equal(parseDuration('1.5s'), 1500)
    assert.equal(parseDuration('250ms'), 250)
    assert.equal(parseDuration('1h2m3s4ms'), 3_723_004)
    assert.equal(parseDuration('0'), 0)
    assert.equal(parseDuration('-5s'), -5000)
    assert.equal(parseDuration('+1m'), 60_000)
  })
  test('rejects what Go rejects', () => {
    for (const bad of ['', '30', '1x', 'm', '1m 30s', '--5s', 's1'])
      assert.throws(() => parseDuration(bad), /ERR_DURATION|duration/)
  })
  test('rejects what no timer can hold (it used to overflow to 1ms)', () => {
    assert.equal(parseDuration('596h'), 2_145_600_000)
    assert.throws(() => parseDuration('597h'), /longer than a timer can hold/)
    assert.throws(() => parseDuration('99999999999h'), /longer than a timer can hold/)
  })
})

describe('configuration edges', () => {
  test('a timer period of 0 or less disables that timer, as in SIA', () => {
    const c = config([], {
      REFRESH_INTERVAL: '0',
      TOKEN_REFRESH_INTERVAL: '-1s',
      MEMORY_REPORT_INTERVAL: '0s',
    })
    assert.deepEqual([c.refreshInterval, c.tokenRefreshInterval, c.memoryReportInterval], [0, 0, 0])
  })
  test('a negative timeout is a config error naming the setting', () => {
    rejects([], { SHUTDOWN_TIMEOUT: '-1s' }, /SHUTDOWN_TIMEOUT: must not be negative/)
    rejects([], { START_TIMEOUT: '-5m' }, /START_TIMEOUT/)
  })
  test('a duration beyond what a timer can hold is a config error naming the setting', () => {
    rejects(
      [],
      { SHUTDOWN_TIMEOUT: '99999999999h' },
      /SHUTDOWN_TIMEOUT: "99999999999h" is longer than a timer can hold/,
    )
    rejects([], { REFRESH_INTERVAL: '1000h' }, /REFRESH_INTERVAL/)
    const path = file('sia.json', JSON.stringify({ services: { gateway: { restartWindow: '9000h' } } }))
    rejects(['--config', path], {}, /services\.gateway\.restartWindow/)
  })
})

describe('loadConfig', () => {
  test('embedded defaults need nothing else', () => {
    const c = config([])
    assert.equal(c.mode, 'refresh')
    assert.equal(c.tokenServerAddr, '127.0.0.1:8880', 'token server on loopback by default')
    assert.equal(c.refreshInterval, 86_400_000)
    assert.equal(c.keyFile, join('.local', 'key.pem'))
    assert.equal(c.services.gateway.enabled, true)
    assert.equal(c.services.gateway.shutdownTimeout, 30_000)
  })

  test('flags > environment > config file > defaults', () => {
    const yaml = file('sia.yaml', 'refreshInterval: 2h\ntokenRefreshInterval: 10m\nshutdownDelay: 3s\n')
    const c = config(['--config', yaml, '--refresh-interval', '4h'], {
      REFRESH_INTERVAL: '3h',
      TOKEN_REFRESH_INTERVAL: '20m',
    })
    assert.equal(c.refreshInterval, 4 * 3_600_000, 'flag wins')
    assert.equal(c.tokenRefreshInterval, 20 * 60_000, 'env beats file')
    assert.equal(c.shutdownDelay, 3000, 'file beats default')
    assert.equal(c.tokenServerTimeout, 10_000, 'default')
  })

  test('per-service tuning from a JSON config file', () => {
    const json = file(
      'sia.json',
      JSON.stringify({
        shutdownTimeout: '20s',
        services: {
          gateway: {
            shutdownTimeout: '45s',
            resourceLimits: { maxOldGenerationSizeMb: 128 },
            restart: 'transient',
            restartBackoff: 0, // a number, as a top-level setting may be
          },
          metrics: { enabled: false },
        },
      }),
    )
    const loaded = loadConfig(['--config', json], {})
    assert.equal(loaded.kind, 'run')
    const c = loaded.config
    assert.equal(c.services.gateway.shutdownTimeout, 45_000)
    // SHUTDOWN_TIMEOUT bounds the whole shutdown: the gateway never gets its 45 s, and is told so.
    assert.deepEqual(
      loaded.warnings.map((w) => w.setting),
      [`services.gateway.shutdownTimeout (in ${json})`],
    )
    assert.match(
      loaded.warnings[0]!.reason,
      /longer than shutdownTimeout \(in .*sia\.json\) \(20s\), which bounds the whole shutdown/,
    )
    assert.equal(c.services.token.shutdownTimeout, 20_000, 'the top-level default applies to the rest')
    // A dedup lease that may run out while the sink is still allowed to write: said, not refused.
    const lease = loadConfig([], { GATEWAY_DEDUP_LEASE: '5s' })
    assert.equal(lease.kind, 'run')
    assert.deepEqual(
      lease.warnings.map((w) => [w.setting, w.reason]),
      [
        [
          'GATEWAY_DEDUP_LEASE',
          'not longer than GATEWAY_SINK_TIMEOUT (10s): a lease that runs out during a slow sink write lets another request write the alert again',
        ],
      ],
    )
    const apart = loadConfig([], { GATEWAY_DEDUP_LEASE: '5s', GATEWAY_SINK_TIMEOUT: '4s' })
    assert.deepEqual(apart.kind === 'run' && apart.warnings, [])
    const noGateway = loadConfig([], { GATEWAY_DEDUP_LEASE: '5s', GATEWAY_ADDR: '' })
    assert.deepEqual(noGateway.kind === 'run' && noGateway.warnings, [])
    // Each field given replaces its default; the others stay (V8's own would be the host's).
    assert.deepEqual(c.services.gateway.resourceLimits, {
      maxOldGenerationSizeMb: 128,
      maxYoungGenerationSizeMb: 16,
    })
    const stack = config([
      '--config',
      file('s.json', '{"services":{"token":{"resourceLimits":{"stackSizeMb":8}}}}'),
    ])
    assert.deepEqual(stack.services.token.resourceLimits, {
      maxOldGenerationSizeMb: 128,
      maxYoungGenerationSizeMb: 16,
      stackSizeMb: 8,
    })
    assert.equal(c.services.gateway.restart, 'transient')
    assert.equal(c.services.gateway.restartBackoff, 0)
    assert.equal(c.services.metrics.enabled, false)
    rejects(
      ['--config', file('c.json', '{"services":{"gateway":{"restartBackoff":5}}}')],
      {},
      /services\.gateway\.restartBackoff.*invalid duration "5"/,
    )
  })

  test('an empty address disables its service', () => {
    const c = config([], { GATEWAY_ADDR: '', METRICS_SERVER_ADDR: '' })
    assert.equal(c.services.gateway.enabled, false)
    assert.equal(c.services.metrics.enabled, false)
    assert.equal(c.services.healthcheck.enabled, true)
  })

  test("SIA's own names: ROLECERT_DIR, USE_TOKEN_SERVER, TOKEN_SERVER_REST_API", () => {
    assert.equal(config([], { ROLECERT_DIR: '/var/run/athenz/roles' }).roleCertDir, '/var/run/athenz/roles')
    assert.equal(config([], { USE_TOKEN_SERVER: 'false' }).services.token.enabled, false)
    assert.equal(config([]).services.token.enabled, true)
    // As SIA, no token server is not no token files: the token service writes them alone, on no port.
    const files = { TARGET_DOMAIN_ROLES: 'demo:role.reader', TOKEN_DIR: '/var/run/athenz/tokens' }
    for (const off of [{ USE_TOKEN_SERVER: 'false' }, { TOKEN_SERVER_ADDR: '' }] as Record<
      string,
      string
    >[]) {
      const c = config([], { ...files, ...off })
      assert.deepEqual([c.services.token.enabled, c.tokenServerAddr], [true, ''], JSON.stringify(off))
    }
    assert.equal(
      config([], { TOKEN_SERVER_ADDR: '', TOKEN_DIR: '/t' }).services.token.enabled,
      false,
      'no targets',
    )
    assert.equal(
      config([], { USE_TOKEN_SERVER: 'false', GATEWAY_ADDR: ':8880' }).gatewayAddr,
      ':8880',
      'its port is free',
    )
    assert.equal(config([], { TOKEN_SERVER_REST_API: 'false' }).tokenServerRestApi, false)
    rejects([], { USE_TOKEN_SERVER: 'maybe' }, /USE_TOKEN_SERVER/)
  })

  test("the certificate service's start deadline makes room for DELAY_JITTER_SECONDS, whichever gave its start timeout", () => {
    const c = config([], { DELAY_JITTER_SECONDS: '20', START_TIMEOUT: '30s' })
    assert.equal(c.services.certificate.startTimeout, 50_000)
    assert.equal(c.services.token.startTimeout, 30_000)
    // An explicit one too: without the pause in it, a 5 s start with up to 20 s of pause failed at random.
    const explicit = file('jitter.yaml', 'services:\n  certificate:\n    startTimeout: 5s\n')
    const e = config(['--config', explicit], { DELAY_JITTER_SECONDS: '20' })
    assert.equal(e.services.certificate.startTimeout, 25_000)
    assert.equal(e.services.token.startTimeout, 30_000)
  })

  test('a restart policy whose settings disagree is refused, naming the one given', () => {
    const restart = (tuning: string) => ['--config', file('restart.yaml', `services:\n  gateway:\n${tuning}`)]
    // A window of 0: every fault the first of its window, restarted at once, never a crash loop.
    rejects(
      restart('    restartWindow: 0s\n'),
      {},
      /services\.gateway\.restartWindow .*: must be at least 1s/,
    )
    rejects(
      restart('    restartWindow: 999ms\n'),
      {},
      /services\.gateway\.restartWindow .*: must be at least 1s/,
    )
    assert.equal(config(restart('    restartWindow: 1s\n')).services.gateway.restartWindow, 1000)
    // A back-off past its cap would never grow.
    rejects(
      restart('    restartBackoff: 30s\n'),
      {},
      /services\.gateway\.restartBackoff .*: must not be longer than restartBackoffMax \(15s, its default\)/,
    )
    rejects(
      restart('    restartBackoffMax: 50ms\n'),
      {},
      /services\.gateway\.restartBackoffMax .*: must not be shorter than restartBackoff \(100ms\)/,
    )
    rejects(
      restart('    restartBackoff: 2s\n    restartBackoffMax: 1s\n'),
      {},
      /services\.gateway\.restartBackoffMax .*: must not be shorter than restartBackoff \(2s\)/,
    )
    const equal = config(restart('    restartBackoff: 2s\n    restartBackoffMax: 2s\n')).services.gateway
    assert.deepEqual([equal.restartBackoff, equal.restartBackoffMax], [2000, 2000])
  })

  test('a deadline made by adding settings must fit a timer too: exit 2 naming the one given', () => {
    // Each alone within 596h; their sum would have been a timer firing after 1 ms.
    rejects(
      [],
      { MODE: 'init', START_TIMEOUT: '300h' },
      /START_TIMEOUT: MODE=init's deadline \(START_TIMEOUT 300h \+ START_TIMEOUT 300h\) is longer than a timer can hold/,
    )
    const tokenStart = file('start.yaml', 'services:\n  token:\n    startTimeout: 400h\n')
    rejects(
      ['--config', tokenStart],
      { MODE: 'init', START_TIMEOUT: '200h' },
      /services\.token\.startTimeout \(in .*start\.yaml\): MODE=init's deadline/,
    )
    // Not a run's: its services start one at a time, each with its own deadline.
    assert.equal(
      config(['--config', tokenStart], { START_TIMEOUT: '300h' }).services.token.startTimeout,
      1_440_000_000,
    )
    rejects(
      [],
      { START_TIMEOUT: '596h', DELAY_JITTER_SECONDS: '3600' },
      /DELAY_JITTER_SECONDS: the certificate service's start deadline \(START_TIMEOUT 596h \+ DELAY_JITTER_SECONDS 1h\) is longer than a timer can hold/,
    )
    rejects(
      ['--config', file('cert.yaml', 'services:\n  certificate:\n    startTimeout: 596h\n')],
      { DELAY_JITTER_SECONDS: '3600' },
      /DELAY_JITTER_SECONDS: the certificate service's start deadline \(services\.certificate\.startTimeout .* 596h/,
    )
    rejects(
      [],
      { SHUTDOWN_DELAY: '300h', SHUTDOWN_TIMEOUT: '300h' },
      /SHUTDOWN_TIMEOUT: the shutdown budget \(SHUTDOWN_DELAY 300h \+ SHUTDOWN_TIMEOUT 300h \+ 1s\) is longer than a timer can hold/,
    )
    // The second to end threads past the budget counts: a budget of the whole 2^31-1 ms does not fit.
    rejects([], { SHUTDOWN_TIMEOUT: '2147483647ms' }, /SHUTDOWN_TIMEOUT: the shutdown budget/)
    assert.equal(config([], { SHUTDOWN_TIMEOUT: '2147482647ms' }).shutdownTimeout, 2_147_482_647)
    assert.equal(
      config([], { SHUTDOWN_DELAY: '298h', SHUTDOWN_TIMEOUT: '298h' }).shutdownTimeout,
      1_072_800_000,
    )
  })

  test('lists and booleans', () => {
    const c = config([], { TARGET_DOMAIN_ROLES: 'a:role.x, b:role.y,' })
    assert.deepEqual(c.targetDomainRoles, ['a:role.x', 'b:role.y'])
  })

  test('a check spanning two settings names the one the operator gave, as they gave it', () => {
    // The value came from the file or a flag: the error names that, not the variable.
    rejects(
      ['--config', file('h.yaml', 'httpHeaderTimeout: 40s\n')],
      {},
      /invalid setting httpHeaderTimeout \(in .*h\.yaml\): must not be longer than HTTP_REQUEST_TIMEOUT \(30s\)/,
    )
    rejects(
      ['--gateway-max-buffered-bytes', '1000'],
      {},
      /invalid setting --gateway-max-buffered-bytes: must be 0 \(no limit\) or at least GATEWAY_MAX_BODY_BYTES \(1048576 bytes\)/,
    )
    rejects(
      [],
      { GATEWAY_MAX_BODY_BYTES: '33554432' },
      /invalid setting GATEWAY_MAX_BODY_BYTES: must not be more than GATEWAY_MAX_BUFFERED_BYTES \(16777216 bytes\)/,
    )
    // Only the request timeout was given: it is the one too short, not the default it meets.
    rejects(
      [],
      { HTTP_REQUEST_TIMEOUT: '5s' },
      /invalid setting HTTP_REQUEST_TIMEOUT: must not be shorter than HTTP_HEADER_TIMEOUT \(10s\)/,
    )
    rejects(
      ['--config', file('r.yaml', 'tokenExpiry: 1h\n'), '--token-refresh-interval', '2h'],
      {},
      /invalid setting tokenExpiry \(in .*r\.yaml\): must be longer than --token-refresh-interval \(2h\)/,
    )
    rejects(
      ['--config', file('e.yaml', 'tokenExpiry: 1h\n')],
      { TOKEN_REFRESH_INTERVAL: '1h' },
      /invalid setting tokenExpiry \(in .*e\.yaml\): must be longer than TOKEN_REFRESH_INTERVAL \(1h\)/,
    )
    rejects(
      [],
      { TOKEN_SERVER_TLS_KEY_PATH: '/k.pem' },
      /invalid setting TOKEN_SERVER_TLS_CERT_PATH: required with TOKEN_SERVER_TLS_KEY_PATH/,
    )
    rejects(
      ['--config', file('p.yaml', 'metricsServerAddr: 127.0.0.1:9999\nhealthCheckAddr: 127.0.0.1:9999\n')],
      {},
      /invalid setting healthCheckAddr \(in .*p\.yaml\): port 9999 is also metricsServerAddr \(in .*p\.yaml\)'s/,
    )
    rejects(
      ['--config', file('s.yaml', 'serviceAccount: "not a name"\n')],
      {},
      /invalid setting serviceAccount \(in .*s\.yaml\): "not a name" is not an Athenz service name/,
    )
  })

  test('every invalid value names its setting', () => {
    rejects([], { TOKEN_SERVER_ADDR: 'localhost' }, /TOKEN_SERVER_ADDR/)
    rejects([], { GATEWAY_ADDR: ':99999' }, /GATEWAY_ADDR/)
    // What listen() could never resolve is refused here, not at the start (exit 1, no setting named).
    for (const bad of ['999.1.1.1:18880', '127.0.0.1 :18880', '[127.0.0.1]:18880', 'a..b:18880', '-a:1'])
      rejects(
        [],
        { TOKEN_SERVER_ADDR: bad },
        /TOKEN_SERVER_ADDR: invalid address .* is neither an IP address nor a host name/,
      )
    for (const good of [
      '127.0.0.1:1',
      '[::1]:1',
      '[::]:1',
      'localhost:1',
      'sia-0.sia.svc.cluster.local.:1',
      'my_host:1',
      ':1',
    ])
      assert.equal(config([], { TOKEN_SERVER_ADDR: good }).tokenServerAddr, good)
    rejects(['--refresh-interval', '5x'], {}, /--refresh-interval/)
    rejects([], { SHUTDOWN_TIMEOUT: '30' }, /SHUTDOWN_TIMEOUT/)
    rejects([], { DELAY_JITTER_SECONDS: '-1' }, /DELAY_JITTER_SECONDS/)
    rejects([], { LOG_LEVEL: 'loud' }, /LOG_LEVEL/)
    // SIA's level names (logrus): any case, and its aliases.
    assert.equal(config([], { LOG_LEVEL: 'INFO' }).logLevel, 'info')
    assert.equal(config([], { LOG_LEVEL: 'Debug' }).logLevel, 'debug')
    assert.equal(config([], { LOG_LEVEL: 'warning' }).logLevel, 'warn')
    rejects(
      [],
      { ROLE_AUTH_HEADER: 'Bad Header' },
      /ROLE_AUTH_HEADER: "Bad Header" is not an HTTP header name/,
    )
    assert.equal(config([], { ROLE_AUTH_HEADER: 'X-Role-Token' }).roleAuthHeader, 'X-Role-Token')
    // As SIA: a token that expires before its refresh leaves the token files stale.
    rejects([], { TOKEN_EXPIRY: '5s' }, /TOKEN_EXPIRY: must be longer than TOKEN_REFRESH_INTERVAL \(30m\)/)
    assert.equal(config([], { TOKEN_EXPIRY: '2h' }).tokenExpiry, 7_200_000)
    // An empty secret file would turn off what it guards.
    rejects(
      [],
      { GATEWAY_AUTH_TOKEN_FILE: file('empty.tok', '') },
      /GATEWAY_AUTH_TOKEN_FILE: .*empty\.tok is empty/,
    )
    rejects(
      [],
      { GATEWAY_AUTH_TOKEN_FILE: file('blank.tok', ' \n\n') },
      /GATEWAY_AUTH_TOKEN_FILE: is only whitespace/,
    )
    // A flag overrides the variables: the file behind one is not read (flags > env > file).
    assert.equal(
      config(['--gateway-auth-token', 'fromflag'], { GATEWAY_AUTH_TOKEN_FILE: '/nonexistent/auth.tok' })
        .gatewayAuthToken,
      'fromflag',
    )
    // Trimmed as AlertManager trims its credentials file: the two sides agree on the token.
    const padded = config([], { GATEWAY_AUTH_TOKEN_FILE: file('padded.tok', 's3cret \n\n') })
    assert.equal(padded.gatewayAuthToken, 's3cret')
    assert.equal(config([], { GATEWAY_AUTH_TOKEN: 's3cret\n' }).gatewayAuthToken, 's3cret')
    // The most it takes, with a token heap that holds what lru-cache sets aside for it.
    const bigHeap = file(
      'heap.yaml',
      'services:\n  token:\n    resourceLimits:\n      maxOldGenerationSizeMb: 512\n',
    )
    assert.equal(
      config(['--config', bigHeap], { TOKEN_CACHE_MAX_ENTRIES: '1000000' }).tokenCacheMaxEntries,
      1_000_000,
    )
    assert.equal(config([], { HEALTH_CHECK_ENDPOINT: '/sant%C3%A9' }).healthCheckEndpoint, '/sant%C3%A9')
    rejects([], { GATEWAY_SINK: 'kubernetes' }, /GATEWAY_KUBE_API.*outside a cluster/)
    // What goes into the resource's URL: a query in the plural would make every create a dry run.
    rejects(
      [],
      { GATEWAY_KUBE_PLURAL: 'alertsignals?dryRun=All' },
      /GATEWAY_KUBE_PLURAL: .* is not a resource name/,
    )
    rejects(
      [],
      { GATEWAY_KUBE_NAMESPACE: 'Monitoring_NS' },
      /GATEWAY_KUBE_NAMESPACE: .* is not a Kubernetes namespace/,
    )
    rejects([], { GATEWAY_KUBE_GROUP: 'sia.athenz.io/v1' }, /GATEWAY_KUBE_GROUP: .* is not an API group/)
    rejects([], { GATEWAY_KUBE_VERSION: 'v1/x' }, /GATEWAY_KUBE_VERSION: .* is not an API version/)
    rejects([], { GATEWAY_KUBE_KIND: 'Alert Signal' }, /GATEWAY_KUBE_KIND: .* is not a kind/)
    assert.equal(
      config([], { GATEWAY_KUBE_PLURAL: 'signals', GATEWAY_KUBE_VERSION: 'v2beta1' }).gatewayKubePlural,
      'signals',
    )
    assert.equal(
      config([], { GATEWAY_SINK: 'kubernetes', KUBERNETES_SERVICE_HOST: '10.0.0.1' }).gatewaySink,
      'kubernetes',
    )
    rejects([], { MODE: 'sometimes' }, /MODE/)
    rejects([], { HEALTH_CHECK_ENDPOINT: 'healthz' }, /HEALTH_CHECK_ENDPOINT/)
    rejects([], { HEALTH_CHECK_ENDPOINT: '/readyz' }, /HEALTH_CHECK_ENDPOINT.*other than \/readyz/)
    rejects([], { HEALTH_CHECK_ENDPOINT: '/healthz?x=1' }, /HEALTH_CHECK_ENDPOINT/)
    rejects([], { SIA_FAILPOINTS: 'nosuch.thing=error' }, /SIA_FAILPOINTS.*nosuch/)
    rejects([], { SIA_FAILPOINTS: 'gateway.start=explode' }, /SIA_FAILPOINTS.*explode/)
    rejects([], { SIA_FAILPOINTS: 'supervisor.during-shutdown=crash' }, /SIA_FAILPOINTS/)
    rejects(['--no-such-flag', 'x'], {}, /no-such-flag/)
    rejects(['--config', file('c.yaml', 'tokenServerAdr: x\n')], {}, /tokenServerAdr.*unknown setting/)
    rejects(
      ['--config', file('c.json', '{"services":{"gateway":{"shutdownTimeout":"soon"}}}')],
      {},
      /services\.gateway\.shutdownTimeout/,
    )
    rejects(
      ['--config', file('c.json', '{"services":{"gatway":{}}}')],
      {},
      /invalid setting services\.gatway \(in .*c\.json\): Unrecognized key/,
    )
    rejects(
      ['--config', file('c.json', '{"services":{"gateway":{"resourceLimits":{"stackSizeMb":100000}}}}')],
      {},
      /services\.gateway\.resourceLimits\.stackSizeMb/,
    )
    // Names an object has by inheritance are no settings either.
    for (const key of ['toString', 'constructor', 'hasOwnProperty']) {
      rejects(
        ['--config', file('c.yaml', `${key}: 5\n`)],
        {},
        new RegExp(`${key} \\(in .*\\): unknown setting`),
      )
    }
    rejects([], { SIA_CONFIG_FILE: '/no/such/sia.yaml' }, /invalid setting SIA_CONFIG_FILE: cannot read/)
    rejects([], { SIA_FAILPOINTS: 'nonsense' }, /SIA_FAILPOINTS: "nonsense" is not name=action/)
    rejects(['--shutdown-delay', '-1s'], {}, /^[^\n]*--shutdown-delay=-XYZ[^\n]*$/)
    rejects([], { GATEWAY_MAX_BODY_BYTES: '0' }, /GATEWAY_MAX_BODY_BYTES: must be greater than 0/)
    assert.equal(config([], { DATA_DIR: '' }).dataDir, '.', 'empty: the working directory')
    assert.equal(config([], { DNS_SUFFIX: 'cluster.local.' }).dnsSuffix, 'cluster.local')
    rejects([], { DATA_DIR: file('data', '') }, /DATA_DIR: .*data exists and is not a directory/)
    rejects([], { DNS_SUFFIX: 'bad suffix!' }, /DNS_SUFFIX: "bad suffix!" is not a DNS name/)
    rejects([], { DNS_SUFFIX: '*.athenz.cloud' }, /DNS_SUFFIX: .* is not a DNS name/)
    rejects([], { POD_UID: 'a b/../x' }, /POD_UID: "a b\/\.\.\/x" is not a DNS label/)
    assert.equal(config([], { POD_UID: '0b5f3a4e-1c2d-4e5f-9a8b-7c6d5e4f3a2b' }).podUid.length, 36)
    rejects(
      ['--config', file('c.json', '{"services":{"gateway":{"startTimeout":"0s"}}}')],
      {},
      /services\.gateway\.startTimeout.*greater than 0/,
    )
    rejects(
      ['--config', file('c.json', '{"services":{"token":{"restart":"always"}}}')],
      {},
      /services\.token\.restart/,
    )
    rejects(['--config', '/nonexistent/sia.yaml'], {}, /--config.*ENOENT/)
    rejects(
      ['--config', file('c.yaml', 'services:\n  gateway:\n    enabled: true\n')],
      { GATEWAY_ADDR: '' },
      /services\.gateway\.enabled.*GATEWAY_ADDR is empty/,
    )
    rejects(['--config', file('c.yaml', 'a: [')], {}, /--config/)
  })

  test('the config file: a value is the text written, as the environment would give it, never what YAML made of it', () => {
    // YAML reads these as numbers: String() of the number was another token, password or name.
    for (const text of ['0123', '0x1F', '12345678901234567890', '1e3', '0o17']) {
      const c = config(['--config', file('n.yaml', `gatewayAuthToken: ${text}\nserviceAccount: ${text}\n`)])
      assert.deepEqual([c.gatewayAuthToken, c.serviceAccount], [text, text])
    }
    assert.equal(config(['--config', file('b.yaml', 'roleAuthHeader: true\n')]).roleAuthHeader, 'true')
    // JSON alike.
    assert.equal(config(['--config', file('n.json', '{"namespace": 2024}')]).namespace, '2024')
    // Where a setting is a number or a boolean, YAML's are fine, and refused where the environment's would be.
    const c = config(['--config', file('s.yaml', 'gatewayMaxInflight: 7\nuseTokenServer: false\n')])
    assert.deepEqual([c.gatewayMaxInflight, c.useTokenServer], [7, false])
    for (const text of ['0x1F', '1e3', '7.0'])
      rejects(
        ['--config', file('i.yaml', `delayJitterSeconds: ${text}\n`)],
        {},
        /delayJitterSeconds .*whole number/,
      )
    rejects(
      ['--config', file('i.yaml', 'gatewayMaxInflight: 9007199254740993\n')],
      {},
      /gatewayMaxInflight .*too large/,
    )
    rejects([], { GATEWAY_MAX_INFLIGHT: '12345678901234567890' }, /GATEWAY_MAX_INFLIGHT: .*too large/)
    // An empty value is YAML's null: an error, not an empty address that would turn a service off.
    rejects(['--config', file('e.yaml', 'gatewayAddr:\n')], {}, /gatewayAddr \(in /)
    // A list only where a setting takes several values.
    rejects(['--config', file('l.yaml', 'gatewayAuthToken: [a, b]\n')], {}, /gatewayAuthToken .*not a list/)
    const lists = config([
      '--config',
      file('l.yaml', 'targetDomainRoles: [a:role.x, b:role.y]\nkeyFile: [/a/key.pem, /b/key.pem]\n'),
    ])
    assert.deepEqual(lists.targetDomainRoles, ['a:role.x', 'b:role.y'])
    assert.equal(lists.keyFile, '/a/key.pem')
    // __proto__ is a key YAML keeps; the schema passed over it.
    rejects(
      ['--config', file('p.yaml', 'services:\n  __proto__:\n    enabled: false\n')],
      {},
      /^invalid setting services\.__proto__ \(in .*\): unknown setting$/,
    )
    rejects(['--config', file('a.yaml', 'services: []\n')], {}, /^invalid setting services \(in /)
    rejects(
      ['--config', file('d.yaml', 'services:\n  gateway:\n    restartWindow: 1e400\n')],
      {},
      /services\.gateway\.restartWindow .*expected a duration such as 30s/,
    )
    // Anchors and aliases are refused (an unquoted secret starting with `*` or `&` was one), those
    // that hold themselves too: one line naming the setting, not a stack overflow.
    rejects(
      ['--config', file('c.yaml', 'services: &x\n  token:\n    resourceLimits: *x\n')],
      {},
      /^invalid setting services \(in .*\): line 1, column 11: a YAML anchor/,
    )
    rejects(
      ['--config', file('c.yaml', 'targetDomainRoles: &x [*x]\n')],
      {},
      /^invalid setting targetDomainRoles \(in .*\): line 1, column 20: a YAML anchor/,
    )
  })

  test('files that are not UTF-8 and empty answers are errors, not a value decoded or guessed', () => {
    const latin1 = join(mkdtempSync(join(tmpdir(), 'sia-cfg-')), 'l.yaml')
    writeFileSync(latin1, Buffer.from('keyFile: /tmp/k\xe9y.pem\n', 'latin1'))
    rejects(['--config', latin1], {}, /^invalid setting --config: .*l\.yaml is not UTF-8$/)
    const secret = join(mkdtempSync(join(tmpdir(), 'sia-cfg-')), 'password')
    writeFileSync(secret, Buffer.from('p\xe4ss\n', 'latin1'))
    rejects(
      [],
      { REDIS_SENTINEL_PASSWORD_FILE: secret },
      /^invalid setting REDIS_SENTINEL_PASSWORD_FILE: .* is not UTF-8$/,
    )
    // A UTF-8 file with a byte-order mark is UTF-8.
    const bom = file('bom.yaml', '\ufeffdnsSuffix: example.org\n')
    assert.equal(config(['--config', bom]).dnsSuffix, 'example.org')
    // Empty: an error for a boolean (it was false, turning the token server off) and for --config.
    for (const name of ['USE_TOKEN_SERVER', 'TOKEN_SERVER_REST_API', 'GATEWAY_RECORD_RESOLVED'])
      rejects([], { [name]: '' }, new RegExp(`^invalid setting ${name}: expected true or false, got ""$`))
    rejects(['--use-token-server='], {}, /--use-token-server: expected true or false/)
    rejects(['--config='], {}, /^invalid setting --config: empty path$/)
    assert.equal(config([], { SIA_CONFIG_FILE: '' }).mode, 'refresh', 'an empty SIA_CONFIG_FILE is none')
  })

  test('a secret is never echoed back', () => {
    assert.throws(
      () => loadConfig([], { REDIS_URL: 'redis://:hunter2@x:6379', LOG_LEVEL: 'loud' }),
      (err: Error) => !err.message.includes('hunter2'),
    )
  })
})

// In process: how the CLI says it (one stderr line, exit 2, nothing started) is the CLI's first test.
test('TARGET_DOMAIN_ROLES, REDIS_URL and the rest are validated at load, naming the setting and no secret', () => {
  const cases: [Record<string, string>, RegExp][] = [
    [
      { TARGET_DOMAIN_ROLES: '../../escape/pwn:role.x' },
      /TARGET_DOMAIN_ROLES: .*domain is not an Athenz name/,
    ],
    [{ TARGET_DOMAIN_ROLES: 'demo:role.reader,demo:role.../../x' }, /TARGET_DOMAIN_ROLES: .*role is not/],
    [{ TARGET_DOMAIN_ROLES: 'a..b:role.r' }, /TARGET_DOMAIN_ROLES: .*domain/],
    [{ TARGET_DOMAIN_ROLES: '-a:role.r' }, /TARGET_DOMAIN_ROLES: .*domain/],
    [{ TARGET_DOMAIN_ROLES: 'a:role.r/x' }, /TARGET_DOMAIN_ROLES: .*role/],
    [{ REDIS_URL: 'redis://:pw%zz@h:6379' }, /REDIS_URL: bad percent-encoding/],
    [{ REDIS_URL: 'redis://us%zz:hunter2@h:6379' }, /REDIS_URL: bad percent-encoding/],
    [{ REDIS_URL: 'redis://:hunter2@h:6379/abc' }, /REDIS_URL: the path is \/<db number>/],
    [{ REDIS_URL: 'rediss://h:6379/0/extra' }, /REDIS_URL: the path/],
    // ioredis takes query options as strings: a number would end the gateway's thread at connect.
    [
      { REDIS_URL: 'redis://h:6379/0?connectTimeout=5000' },
      /REDIS_URL: .*query option "connectTimeout" is not supported/,
    ],
    [{ REDIS_URL: 'redis://h:6379/0?tls=false' }, /REDIS_URL: .*query option "tls" has an invalid value/],
    [{ REDIS_URL: 'redis://h:6379?db=three' }, /REDIS_URL: .*query option "db" has an invalid value/],
    [{ ENDPOINT: 'zts.example.com' }, /ENDPOINT: must be an https:\/\/ URL/],
    [{ ENDPOINT: 'http://zts.example.com:4443/zts/v1' }, /ENDPOINT: must be an https:\/\/ URL/],
    [{ POD_IP: 'bogus' }, /POD_IP: must be an IPv4 or IPv6 address/],
    [{ POD_IP: '10.0.0.256' }, /POD_IP: must be an IPv4 or IPv6 address/],
    // A deadline of 0 would fail everything it bounds.
    ...[
      'START_TIMEOUT',
      'TOKEN_SERVER_TIMEOUT',
      'GATEWAY_DEDUP_TIMEOUT',
      'GATEWAY_DEDUP_LEASE',
      'GATEWAY_SINK_TIMEOUT',
      'METRICS_SCRAPE_TIMEOUT',
      'SERVICE_CALL_TIMEOUT',
    ].map((k): [Record<string, string>, RegExp] => [
      { [k]: '0' },
      new RegExp(`${k}: must be greater than 0`),
    ]),
    // Rounded to 0: deduplication off (the CLI's own test has 0).
    [{ GATEWAY_DEDUP_TTL: '0.1ms' }, /GATEWAY_DEDUP_TTL: must be greater than 0/],
    [{ DELAY_JITTER_SECONDS: '100000000' }, /DELAY_JITTER_SECONDS: must be at most 2147483/],
    [{ TOKEN_CACHE_MAX_ENTRIES: '10000000' }, /TOKEN_CACHE_MAX_ENTRIES: must be at most 1000000/],
    [{ ROLE_AUTH_HEADER: 'Content-Length' }, /ROLE_AUTH_HEADER: "Content-Length" frames the answer/],
    [{ ROLE_AUTH_HEADER: 'transfer-encoding' }, /ROLE_AUTH_HEADER: .*frames the answer/],
    [{ HEALTH_CHECK_ENDPOINT: '/health check' }, /HEALTH_CHECK_ENDPOINT: .*percent-encoded/],
    [{ HEALTH_CHECK_ENDPOINT: '/santé' }, /HEALTH_CHECK_ENDPOINT: .*percent-encoded/],
    [{ GATEWAY_AUTH_TOKEN: 's3 cret' }, /GATEWAY_AUTH_TOKEN: must not hold whitespace/],
    [
      { GATEWAY_SINK: 'kubernetes', GATEWAY_KUBE_API: 'http://127.0.0.1:6443' },
      /GATEWAY_KUBE_API: "http:\/\/127.0.0.1:6443" is not an https:\/\/ URL/,
    ],
    [{ GATEWAY_SINK: 'kubernetes', GATEWAY_KUBE_API: 'not-a-url' }, /GATEWAY_KUBE_API: .*not an https/],
  ]
  for (const [env, reason] of cases) {
    assert.throws(
      () => loadConfig([], env),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_CONFIG', JSON.stringify(env))
        assert.match(err.message, /^invalid setting /)
        assert.match(err.message, reason)
        for (const secret of ['pw%zz', 'hunter2', 'us%zz'])
          assert.ok(!err.message.includes(secret), err.message)
        return true
      },
    )
  }
  // Valid names and URLs still load.
  assert.equal(config([], { POD_IP: 'fd00::7' }).podIp, 'fd00::7')
  assert.equal(
    config([], { ENDPOINT: 'https://zts.example:4443/zts/v1' }).endpoint,
    'https://zts.example:4443/zts/v1',
  )
  const c = config([], {
    TARGET_DOMAIN_ROLES: 'other.dom:role.writer,a_b-c.d:role.r.x_1',
    REDIS_URL: 'redis://:p%40ss@h:6379/2',
  })
  assert.deepEqual(c.targetDomainRoles, ['other.dom:role.writer', 'a_b-c.d:role.r.x_1'])
  for (const url of [
    'redis://h',
    'redis://h:6379/',
    'rediss://u:p@h:6380/15?tls=true',
    'redis://h:6379/1?family=6&connectionName=sia',
    // The string options ioredis takes from the query, as it takes them.
    'redis://h:6379?db=3&password=pw',
    'redis://h:6379/0?keyPrefix=tenant-a:&username=u',
  ])
    assert.equal(config([], { REDIS_URL: url }).redisUrl, url)
})

describe('the CLI', () => {
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
      encoding: 'utf8',
      // A configuration accepted starts the sidecar, which runs until it is stopped: ended, so the
      // test fails on its status rather than hanging.
      timeout: 10_000,
      killSignal: 'SIGKILL',
    })

  test('invalid configuration: one line naming the setting on stderr, exit 2, nothing started', () => {
    const r = run([], { TOKEN_SERVER_ADDR: 'nonsense', DATA_DIR: mkdtempSync(join(tmpdir(), 'sia-')) })
    assert.equal(r.status, 2)
    assert.equal(r.stdout, '', 'no service was started, nothing was logged')
    assert.match(r.stderr, /^sia-supervisor: invalid setting TOKEN_SERVER_ADDR: invalid address "nonsense"/)
    assert.equal(r.stderr.trim().split('\n').length, 1)
  })

  test('two services on one port: exit 2 naming both, whatever their hosts; a disabled one or port 0 is no clash', () => {
    rejects([], { GATEWAY_ADDR: '127.0.0.1:8880' }, /GATEWAY_ADDR: port 8880 is also TOKEN_SERVER_ADDR's/)
    // The one the operator set is named, whichever service comes first.
    rejects(
      [],
      { METRICS_SERVER_ADDR: '10.0.0.1:9998' },
      /METRICS_SERVER_ADDR: port 9998 is also HEALTH_CHECK_ADDR's/,
    )
    rejects([], { GATEWAY_ADDR: ':9998' }, /GATEWAY_ADDR: port 9998 is also HEALTH_CHECK_ADDR's/)
    const r = run([], { GATEWAY_ADDR: ':8880', DATA_DIR: mkdtempSync(join(tmpdir(), 'sia-')) })
    assert.equal(r.status, 2)
    assert.equal(r.stdout, '', 'nothing was started')
    assert.match(
      r.stderr,
      /^sia-supervisor: invalid setting GATEWAY_ADDR: port 8880 is also TOKEN_SERVER_ADDR's/,
    )
    assert.equal(
      config([], { GATEWAY_ADDR: '127.0.0.1:8880', USE_TOKEN_SERVER: 'false' }).gatewayAddr,
      '127.0.0.1:8880',
    )
    assert.equal(
      config([], { GATEWAY_ADDR: '127.0.0.1:0', TOKEN_SERVER_ADDR: '127.0.0.1:0' }).gatewayAddr,
      '127.0.0.1:0',
    )
  })

  test('--help lists every setting with its environment variable, exit 0', () => {
    const r = run(['--help'])
    assert.equal(r.status, 0)
    for (const s of [
      '--token-server-addr',
      'TOKEN_SERVER_ADDR',
      'SHUTDOWN_DELAY',
      'SIA_FAILPOINTS',
      '--config',
    ]) {
      assert.ok(r.stdout.includes(s), s)
    }
  })

  test('--help lists every k8s-athenz-sia variable: each is a setting of its own', () => {
    const r = run(['--help'])
    assert.equal(r.status, 0)
    const listed = new Set(
      r.stdout
        .split('\n')
        .map((l) => /^\s+--\S+\s+([A-Z][A-Z0-9_]+)\s/.exec(l)?.[1])
        .filter(Boolean),
    )
    const missing = SIA_VARIABLES.filter((v) => !listed.has(v))
    assert.deepEqual(missing, [], `not in --help: ${missing.join(', ')}`)
  })

  // 0 would make no repeat a duplicate: every AlertManager retry and HA peer's copy stored
  // again, with no word of it.
  test('GATEWAY_DEDUP_TTL=0: exit 2 naming it, nothing started', () => {
    const r = run([], { GATEWAY_DEDUP_TTL: '0', DATA_DIR: mkdtempSync(join(tmpdir(), 'sia-')) })
    assert.equal(r.status, 2)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^sia-supervisor: invalid setting GATEWAY_DEDUP_TTL: must be greater than 0/)
  })

  test('SHUTDOWN_TIMEOUT=99999999999h: exit 2 naming it, nothing started', () => {
    const r = run([], { SHUTDOWN_TIMEOUT: '99999999999h' })
    assert.equal(r.status, 2)
    assert.equal(r.stdout, '')
    assert.match(
      r.stderr,
      /^sia-supervisor: invalid setting SHUTDOWN_TIMEOUT: .*longer than a timer can hold/,
    )
  })

  test('MODE=init with START_TIMEOUT=300h: exit 2 naming it, nothing started', () => {
    // Twice 300h was a deadline past what a timer holds: init.failed at once, exit 1.
    const r = run([], { MODE: 'init', START_TIMEOUT: '300h', DATA_DIR: mkdtempSync(join(tmpdir(), 'sia-')) })
    assert.equal(r.status, 2)
    assert.equal(r.stdout, '')
    assert.match(r.stderr, /^sia-supervisor: invalid setting START_TIMEOUT: MODE=init's deadline/)
  })

  test('restartWindow: 0s: exit 2 naming it, nothing started', () => {
    // Hundreds of restarts a second of a worker that crashes at start, never a crash loop.
    const window = file('window.yaml', 'services:\n  memory-reporter:\n    restartWindow: 0s\n')
    const r = run(['--config', window], {
      DATA_DIR: mkdtempSync(join(tmpdir(), 'sia-')),
      SIA_FAILPOINTS: 'memory-reporter.start=crash',
    })
    assert.equal(r.status, 2)
    assert.equal(r.stdout, '')
    assert.match(
      r.stderr,
      /^sia-supervisor: invalid setting services\.memory-reporter\.restartWindow \(in .*\): must be at least 1s/,
    )
  })

  test('intervals of 0 do not spin: the timers wait for shutdown, with no tick logged', async () => {
    const sc = startSidecar({
      env: {
        REFRESH_INTERVAL: '0',
        TOKEN_REFRESH_INTERVAL: '0',
        MEMORY_REPORT_INTERVAL: '0',
        LOG_LEVEL: 'debug',
      },
    })
    await sc.waitForEvent('supervisor.ready')
    const before = sc.records.length
    // Two heartbeats' worth of time: a spinning timer logs thousands of records in it.
    await new Promise((r) => setTimeout(r, 2000))
    const during = sc.records.slice(before)
    assert.deepEqual(
      during.filter((r) => r.event === 'memory.report' || /refresh/.test(r.event ?? '')).map((r) => r.event),
      [],
    )
    assert.ok(during.length < 20, `${during.length} records in 2s`)
    assert.equal(await stop(sc), 0)
  })

  test('--version prints the package version', () => {
    const r = run(['--version'])
    assert.equal(r.status, 0)
    assert.match(r.stdout, /^\d+\.\d+\.\d+\n$/)
  })
})

test("HTTP_MAX_CONNECTIONS's default: an eighth of the soft open-file limit, at most 4096", () => {
  const limits = (soft: string) =>
    `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                 1048576              files\n`
  assert.equal(defaultMaxConnections(limits('1024')), 128)
  assert.equal(defaultMaxConnections(limits('1048576')), 4096)
  assert.equal(defaultMaxConnections(limits('unlimited')), 4096)
  assert.equal(defaultMaxConnections(limits('4')), 1)
  assert.equal(defaultMaxConnections(''), 4096)
  assert.equal(config([], { HTTP_MAX_CONNECTIONS: '0' }).httpMaxConnections, 0)
})
