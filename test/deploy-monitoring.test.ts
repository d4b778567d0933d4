import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { DEFAULT_CONTAINER_MEMORY_MB } from '../shared/container-resources.js'
import { DEPLOY, REPO, readYaml, which } from './support/deploy.js'
import { exposedNames, grafanaToPromql, promqlNames } from './support/promql.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

/**
 * deploy/grafana and deploy/prometheus (issue 15): every PromQL expression parses and names only
 * metrics that a running sidecar really exposes (it is started and scraped here); the rules pass
 * `promtool check rules`, and `promtool test rules` runs a firing and a not-firing test of each.
 */

/** Grafana's reference to the dashboard's data source variable. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JS template
const DATASOURCE_VARIABLE = '${datasource}'
const DASHBOARD = join(DEPLOY, 'grafana', 'sia-supervisor.json')
const RULES = join(DEPLOY, 'prometheus', 'rules.yaml')
const RULE_TESTS = join(DEPLOY, 'prometheus', 'rules.test.yaml')

interface Rule {
  alert: string
  expr: string
  for?: string
  labels: Record<string, string>
  annotations: Record<string, string>
}
interface Panel {
  id: number
  type: string
  title: string
  datasource?: { uid: string }
  targets?: { expr: string; datasource?: { uid: string } }[]
}
interface Dashboard {
  uid: string
  panels: Panel[]
  templating: { list: { name: string; type: string; query: string | { query: string } }[] }
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard
const rules = (readYaml(RULES) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap(
  (g) => g.rules,
)
const panelExprs = dashboard.panels.flatMap((p) =>
  (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: t.expr })),
)
const variableExprs = dashboard.templating.list
  .filter((v) => v.type === 'query')
  .map((v) => {
    const q = typeof v.query === 'string' ? v.query : v.query.query
    const m = /^label_values\((.+),\s*\w+\)$/.exec(q)
    assert.ok(m, `variable ${v.name}: label_values(<selector>, <label>)`)
    return { where: `variable ${v.name}`, expr: m[1]! }
  })
const ruleExprs = rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr }))

/** What the brief asks the kit to alert on, by the alert that does it. */
const REQUIRED_ALERTS = [
  'SiaCertificateExpiringSoon', // within 7 days
  'SiaCertificateExpiringCritical', // within 1 day, critical
  'SiaCertificateReadError',
  'SiaFileWriteStuck', // a write to the certificate or token volume that hangs
  'SiaWorkerDown',
  'SiaWorkerRestarting',
  'SiaCrashLoop',
  'SiaSidecarDown', // no scrape at all: a start that keeps failing
  'SiaWorkerHeapNearLimit',
  'SiaGatewayErrorRatio',
  'SiaGatewaySinkErrors',
  'SiaTokenFetchFailures',
  'SiaSidecarNotReady',
]

/** What the brief asks the dashboard to show, by the series that show it. */
const REQUIRED_ON_DASHBOARD = [
  'sia_worker_up',
  'sia_worker_restarts_total',
  'sia_worker_heap_used_bytes',
  'sia_worker_heap_limit_bytes',
  'sia_worker_event_loop_utilization',
  'sia_service_start_duration_seconds',
  'sia_service_shutdown_duration_seconds',
  'x509_cert_expires_in_seconds',
  'cached_token_entries',
  'cached_token_bytes',
  'token_expires_in_seconds',
  'gateway_requests_total',
  'gateway_request_duration_seconds_bucket',
  'gateway_signals_created_total',
  'gateway_signals_deduplicated_total',
  'gateway_sink_errors_total',
  'gateway_dedup_store_up',
]

describe('deploy/grafana and deploy/prometheus: PromQL against a real scrape', () => {
  let sc: Sidecar
  let exposed: Set<string>
  before(async () => {
    sc = await startReady({ env: { TARGET_DOMAIN_ROLES: 'demo:role.reader' } })
    // One webhook and one token request, so that the request series have samples too.
    const hook = await fetch(`${await sc.url('gateway')}/api/v1/signals/prometheus`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: readFileSync(join(REPO, 'test', 'fixtures', 'alertmanager.json')),
    })
    assert.equal(hook.status, 201)
    const token = await fetch(`${await sc.url('token')}/roletoken`, {
      method: 'POST',
      body: '{"domain":"demo","role":"reader"}',
    })
    assert.equal(token.status, 200)
    const res = await fetch(`${await sc.url('metrics')}/metrics`)
    assert.equal(res.status, 200)
    // With `up`, the series Prometheus itself records of every scrape (SiaSidecarDown).
    exposed = new Set([...exposedNames(await res.text()), 'up'])
  })
  after(async () => {
    if (sc) assert.equal(await stop(sc), 0)
  })

  test('the scrape is a real one', () => {
    for (const name of [
      'sia_worker_up',
      'gateway_requests_total',
      'x509_cert_not_after',
      'process_start_time_seconds',
    ]) {
      assert.ok(exposed.has(name), `${name} is exposed`)
    }
    assert.ok(!exposed.has('no_such_metric'))
    assert.deepEqual(promqlNames('sum(rate(no_such_metric{a="b"}[5m])) / on(x) other').names.sort(), [
      'no_such_metric',
      'other',
    ])
  })

  for (const [what, exprs] of [
    ['the dashboard', [...panelExprs, ...variableExprs]],
    ['the alert rules', ruleExprs],
  ] as const) {
    test(`every PromQL expression of ${what} parses and names only exposed metrics`, () => {
      assert.ok(exprs.length > 10)
      const unknown: string[] = []
      for (const { where, expr } of exprs) {
        const parsed = promqlNames(grafanaToPromql(expr))
        assert.deepEqual(parsed.errors, [], `${where}: ${expr}`)
        assert.ok(parsed.names.length > 0, `${where} selects a metric`)
        for (const name of parsed.names) if (!exposed.has(name)) unknown.push(`${where}: ${name}`)
      }
      assert.deepEqual(unknown, [], 'metrics the sidecar does not expose')
    })
  }

  test('the dashboard: namespace and pod variables on every query, one data source, what the brief lists', () => {
    const vars = dashboard.templating.list.map((v) => v.name)
    for (const v of ['datasource', 'namespace', 'pod']) assert.ok(vars.includes(v), `variable ${v}`)
    for (const { where, expr } of panelExprs) {
      for (const s of promqlNames(grafanaToPromql(expr)).selectors) {
        assert.ok(s.matchers.includes('namespace=~"$namespace"'), `${where}: ${s.name} filters by $namespace`)
        assert.ok(s.matchers.includes('pod=~"$pod"'), `${where}: ${s.name} filters by $pod`)
      }
    }
    const ids = dashboard.panels.map((p) => p.id)
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique')
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) {
      assert.equal(p.datasource?.uid, DATASOURCE_VARIABLE, `panel "${p.title}" uses the data source variable`)
    }
    const used = new Set(panelExprs.flatMap(({ expr }) => promqlNames(grafanaToPromql(expr)).names))
    for (const name of REQUIRED_ON_DASHBOARD) assert.ok(used.has(name), `the dashboard shows ${name}`)
    // The RSS panel's red line is the container memory limit of deploy/kubernetes.
    assert.ok(readFileSync(DASHBOARD, 'utf8').includes(`"value": ${DEFAULT_CONTAINER_MEMORY_MB * 2 ** 20}`))
  })

  test('the rules: every alert the brief lists, each with a severity and a runbook', () => {
    const names = rules.map((r) => r.alert)
    for (const a of REQUIRED_ALERTS) assert.ok(names.includes(a), `alert ${a}`)
    assert.equal(new Set(names).size, names.length, 'alert names are unique')
    for (const r of rules) {
      assert.ok(['warning', 'critical'].includes(r.labels.severity ?? ''), `${r.alert} has a severity`)
      for (const a of ['summary', 'description', 'runbook']) {
        assert.ok((r.annotations[a] ?? '').length > 20, `${r.alert} has a ${a}`)
      }
    }
    const byName = Object.fromEntries(rules.map((r) => [r.alert, r]))
    assert.match(byName.SiaCertificateExpiringSoon!.expr, /< 7 \* 86400/)
    assert.equal(byName.SiaCertificateExpiringCritical!.labels.severity, 'critical')
    assert.match(byName.SiaCertificateExpiringCritical!.expr, /< 86400$/m)
    // The memory alert's limit is the container limit of deploy/kubernetes.
    const limit = /\((\d+) \* 1048576\)/.exec(byName.SiaSidecarMemoryNearLimit!.expr)
    assert.equal(Number(limit?.[1]), DEFAULT_CONTAINER_MEMORY_MB)
  })
})

describe('deploy/prometheus: promtool', () => {
  const promtool = which('promtool')
  const skip = promtool
    ? false
    : 'promtool is not installed (apt-get install prometheus; .ci/run does): the rules are not checked by it'

  test('promtool check rules', { skip }, () => {
    const r = spawnSync(promtool!, ['check', 'rules', RULES], { encoding: 'utf8' })
    assert.equal(r.status, 0, r.stdout + r.stderr)
    assert.match(r.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`))
  })

  test('promtool test rules: every alert fires in one test and stays silent in another', { skip }, () => {
    const doc = readYaml(RULE_TESTS) as {
      rule_files: string[]
      tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[]
    }
    assert.deepEqual(doc.rule_files, ['rules.yaml'])
    const cases = doc.tests.flatMap((t) => t.alert_rule_test ?? [])
    for (const r of rules) {
      const mine = cases.filter((c) => c.alertname === r.alert)
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${r.alert} has a firing test`,
      )
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${r.alert} has a not-firing test`,
      )
    }
    const r = spawnSync(promtool!, ['test', 'rules', RULE_TESTS], {
      encoding: 'utf8',
      cwd: join(DEPLOY, 'prometheus'),
    })
    assert.equal(r.status, 0, r.stdout + r.stderr)
    assert.match(r.stdout + r.stderr, /SUCCESS/)
  })

  test('the unit tests catch a broken rule', { skip }, () => {
    // The same tests against rules with the critical threshold moved: they must fail.
    const dir = mkdtempSync(join(tmpdir(), 'sia-rules-'))
    cpSync(RULE_TESTS, join(dir, 'rules.test.yaml'))
    const broken = readFileSync(RULES, 'utf8').replace(
      'expr: x509_cert_expires_in_seconds < 86400',
      'expr: x509_cert_expires_in_seconds < 3600',
    )
    assert.notEqual(broken, readFileSync(RULES, 'utf8'))
    writeFileSync(join(dir, 'rules.yaml'), broken)
    const r = spawnSync(promtool!, ['test', 'rules', 'rules.test.yaml'], { encoding: 'utf8', cwd: dir })
    assert.notEqual(r.status, 0, 'promtool test rules failed on the broken rule')
    assert.match(r.stdout + r.stderr, /SiaCertificateExpiringCritical/)
  })
})
