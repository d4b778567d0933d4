import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import ts from 'typescript'
import { parseAllDocuments } from 'yaml'
import { parseAddress } from '../shared/address.js'
import { CSR_POOL_LIMITS, CSR_POOL_THREADS } from '../shared/config/limits.js'
import { loadConfig } from '../shared/config/load.js'
import { SETTINGS } from '../shared/config/settings.js'
import type { Config, ResourceLimits } from '../shared/config/types.js'
import {
  DEFAULT_CONTAINER_MEMORY_MB,
  DEFAULT_CONTAINER_MEMORY_REQUEST_MB,
  MEASURED_IDLE_RSS_MB,
  MEASURED_PEAK_RSS_MB,
  NON_HEAP_RSS_MB,
} from '../shared/container-resources.js'
import { parseDuration } from '../shared/duration.js'
import { SERVICES } from '../shared/services.js'
import { toSinkRecord } from '../workers/gateway/sink.js'
import { startKubeApi } from './doubles/kube-api.js'
import {
  DEPLOY,
  type Kustomization,
  kustomizationResources,
  type Manifest,
  quantityBytes,
  REPO,
  readYaml,
  which,
  yamlFiles,
} from './support/deploy.js'
import { eventually } from './support/eventually.js'
import { freePort } from './support/ports.js'
import { startRedis } from './support/redis.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

/**
 * deploy/kubernetes (issue 15): every manifest is a valid Kubernetes object, the kustomization
 * builds them all, and every number in them that depends on the code (grace period, ports, probe
 * paths, memory, the sink's resource, RBAC) is checked against the code's own defaults and
 * configuration loader, so the two cannot drift apart.
 */

const KUBE = join(DEPLOY, 'kubernetes')
const MONITORING = join(KUBE, 'monitoring')
const IMAGE = 'sia-supervisor'

// biome-ignore lint/suspicious/noExplicitAny: manifests are untyped YAML, checked field by field
type Obj = any

const manifests = kustomizationResources(KUBE)
const monitoring = kustomizationResources(MONITORING)
const kustomization = readYaml(join(KUBE, 'kustomization.yaml')) as Kustomization
const find = (kind: string, name: string): Obj => {
  const m = [...manifests, ...monitoring].find((x) => x.doc.kind === kind && x.doc.metadata.name === name)
  assert.ok(m, `${kind} ${name} is in the kustomization`)
  return m.doc
}
const deployments = manifests.filter((m) => m.doc.kind === 'Deployment').map((m) => m.doc as Obj)

/** The sia-supervisor containers of a pod template, sidecars (init containers) included. */
function siaContainers(podSpec: Obj): { container: Obj; sidecar: boolean }[] {
  return [
    ...(podSpec.initContainers ?? []).map((c: Obj) => ({ container: c, sidecar: true })),
    ...(podSpec.containers ?? []).map((c: Obj) => ({ container: c, sidecar: false })),
  ].filter(({ container }) => container.image === IMAGE)
}
const sidecarPods = deployments.filter((d) => siaContainers(d.spec.template.spec).length > 0)

/** The one sia-supervisor container of a Deployment. */
function siaOf(d: Obj): Obj {
  const found = siaContainers(d.spec.template.spec)
  assert.equal(found.length, 1, `${d.metadata.name} runs one sia-supervisor container`)
  return found[0]!.container
}

/** What the sidecar's own configuration loader makes of a container's env, as in the cluster. */
function configOf(container: Obj): Config {
  const env: Record<string, string> = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value)
    else if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') env[e.name] = '10.0.0.7'
    else if (e.valueFrom) env[e.name] = 'from-the-cluster'
  }
  const inv = loadConfig(container.args ?? [], env)
  assert.equal(inv.kind, 'run')
  return (inv as { config: Config }).config
}

function portNumber(container: Obj, port: string | number): number {
  if (typeof port === 'number') return port
  const p = (container.ports ?? []).find((x: Obj) => x.name === port)
  assert.ok(p, `container ${container.name} has a port named ${port}`)
  return p.containerPort
}

/** The API group/version's module of kubernetes-models (or its prometheus-operator package). */
async function modelOf(
  apiVersion: string,
  kind: string,
): Promise<new (data: unknown) => { validate(): void }> {
  const path = apiVersion.startsWith('monitoring.coreos.com/')
    ? `@kubernetes-models/prometheus-operator/${apiVersion}`
    : `kubernetes-models/${apiVersion}`
  const mod = (await import(path)) as Record<string, new (data: unknown) => { validate(): void }>
  const model = mod[kind]
  assert.ok(model, `kubernetes-models has ${apiVersion} ${kind}`)
  return model
}

/** `import type { I<Kind> } from '<module>/<Kind>'` for the type check below. */
function typeImport(apiVersion: string, kind: string): string {
  const path = apiVersion.startsWith('monitoring.coreos.com/')
    ? `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`
    : `kubernetes-models/${apiVersion}/${kind}`
  return `import type { I${kind} } from '${path}'`
}

// The three parts share nothing (each sidecar its own ports and directory): side by side; each
// part's tests one after the other (a suite's concurrency is its children's unless they set theirs).
describe('deploy/kubernetes', { concurrency: 3 }, () => {
  describe('deploy/kubernetes: the manifests', { concurrency: 1 }, () => {
    test('the kustomizations name only files that exist, and every manifest file is built by one', () => {
      const built = new Set([...manifests, ...monitoring].map((m) => m.file))
      const onDisk = yamlFiles(KUBE)
        .map((f) => f.slice(REPO.length + 1))
        .filter((f) => !f.endsWith('/kustomization.yaml') && !f.includes('/alertmanager/'))
      assert.deepEqual(
        [...built].sort(),
        onDisk.sort(),
        'every manifest is in a kustomization, and only those',
      )
      const kinds = manifests.map((m) => m.doc.kind)
      for (const kind of [
        'Namespace',
        'CustomResourceDefinition',
        'Deployment',
        'Service',
        'PodDisruptionBudget',
        'Role',
        'RoleBinding',
        'ServiceAccount',
      ]) {
        assert.ok(kinds.includes(kind), `the kit has a ${kind}`)
      }
    })

    test('every manifest validates against the Kubernetes API schemas (kubernetes-models)', async () => {
      for (const m of [...manifests, ...monitoring]) {
        const Model = await modelOf(m.doc.apiVersion, m.doc.kind)
        try {
          new Model(m.doc).validate()
        } catch (err) {
          assert.fail(`${m.file} (${m.doc.kind} ${m.doc.metadata.name}): ${(err as Error).message}`)
        }
      }
    })

    test('no manifest has a field the API does not know (excess-property check against the model types)', () => {
      // The OpenAPI schemas allow unknown fields (the API server drops them, silently without
      // strict field validation), so a misspelt `readinesProbe` would validate above. The models'
      // TypeScript interfaces do not: each manifest becomes an object literal of its type.
      const lines: string[] = []
      const seen = new Set<string>()
      const all: Manifest[] = [...manifests, ...monitoring]
      all.forEach((m, i) => {
        const key = `${m.doc.apiVersion} ${m.doc.kind}`
        if (!seen.has(key)) lines.push(typeImport(m.doc.apiVersion, m.doc.kind))
        seen.add(key)
        lines.push(
          `// ${m.file}#${m.index}`,
          `export const m${i}: I${m.doc.kind} = ${JSON.stringify(m.doc, null, 1)}`,
        )
      })
      const file = join(REPO, 'deploy', '__manifests__.ts') // virtual: served from memory, never written
      const options: ts.CompilerOptions = {
        strict: true,
        noEmit: true,
        module: ts.ModuleKind.NodeNext,
        moduleResolution: ts.ModuleResolutionKind.NodeNext,
        target: ts.ScriptTarget.ES2022,
        skipLibCheck: true,
        types: [],
      }
      const host = ts.createCompilerHost(options)
      const text = lines.join('\n')
      const getSourceFile = host.getSourceFile.bind(host)
      host.getSourceFile = (name, lang, ...rest) =>
        name === file ? ts.createSourceFile(name, text, lang) : getSourceFile(name, lang, ...rest)
      const fileExists = host.fileExists.bind(host)
      host.fileExists = (name) => name === file || fileExists(name)
      const program = ts.createProgram([file], options, host)
      const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => {
        const where =
          d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined
        const manifest = where
          ? text
              .split('\n')
              .slice(0, where.line + 1)
              .findLast((l) => l.startsWith('// '))
          : ''
        return `${manifest}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
      })
      assert.deepEqual(diagnostics, [])
    })

    test('kubectl kustomize builds both halves into the kit namespace', (t) => {
      const kubectl = which('kubectl')
      if (!kubectl) return t.skip('kubectl is not installed: the build itself is not checked')
      const r = spawnSync(kubectl, ['kustomize', KUBE], { encoding: 'utf8' })
      assert.equal(r.status, 0, r.stderr)
      const built = parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj)
      const names = (list: Obj[]) => list.map((d) => `${d.kind}/${d.metadata.name}`).sort()
      assert.deepEqual(names(built), names(manifests.map((m) => m.doc)))
      for (const d of built) {
        if (['Namespace', 'CustomResourceDefinition'].includes(d.kind)) continue
        assert.equal(d.metadata.namespace, kustomization.namespace, `${d.kind}/${d.metadata.name} namespace`)
      }
      const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string })
        .version
      for (const d of built.filter((x) => x.kind === 'Deployment')) {
        for (const c of [
          ...(d.spec.template.spec.initContainers ?? []),
          ...d.spec.template.spec.containers,
        ]) {
          assert.match(c.image, /:[\w.-]+$/, `${d.metadata.name}/${c.name} has a tagged image`)
          if (c.image.startsWith(`${IMAGE}:`))
            assert.equal(c.image, `${IMAGE}:${version}`, 'image tag = version')
        }
      }
      assert.equal(
        kubectl && spawnSync(kubectl, ['kustomize', MONITORING], { encoding: 'utf8' }).status,
        0,
        'the monitoring kustomization builds',
      )
    })
  })

  describe('deploy/kubernetes: the numbers are the code’s', { concurrency: 1 }, () => {
    test('both Deployments run sia-supervisor; the application has it as a native sidecar', () => {
      assert.deepEqual(sidecarPods.map((d) => d.metadata.name).sort(), ['sia-app', 'sia-gateway'])
      const app = find('Deployment', 'sia-app').spec.template.spec
      const [sia] = siaContainers(app)
      assert.ok(sia?.sidecar, 'sia-supervisor is an init container of the application')
      assert.equal(
        sia.container.restartPolicy,
        'Always',
        'restartPolicy Always: a native sidecar (Kubernetes >= 1.29)',
      )
      assert.ok(
        sia.container.startupProbe,
        'a startup probe: the application starts once the sidecar is ready',
      )
      assert.ok(app.containers.length >= 1, 'the application container')
    })

    test('the application reaches the token server on loopback, and nothing else can', () => {
      const app = find('Deployment', 'sia-app').spec.template.spec
      const [sia] = siaContainers(app)
      const config = configOf(sia!.container)
      assert.ok(config.services.token.enabled)
      const { host, port } = parseAddress(config.tokenServerAddr)
      assert.ok(
        host === '127.0.0.1' || host === '::1',
        `TOKEN_SERVER_ADDR ${config.tokenServerAddr} is loopback`,
      )
      assert.ok(
        !(sia!.container.ports ?? []).some((p: Obj) => p.containerPort === port),
        'the token port is not declared as a container port',
      )
      const appText = JSON.stringify(app.containers)
      assert.ok(
        appText.includes(`http://127.0.0.1:${port}/`),
        'the application calls the token server on loopback',
      )
      assert.equal(config.services.gateway.enabled, false, 'no gateway beside the application')
    })

    for (const name of ['sia-app', 'sia-gateway']) {
      test(`${name}: grace period >= SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT + 2s, from the settings' defaults`, () => {
        const pod = find('Deployment', name).spec.template.spec
        const container = siaOf(find('Deployment', name))
        const config = configOf(container)
        // What the loader made of it is what the settings say: env if set, else the default in code.
        const env = Object.fromEntries((container.env ?? []).map((e: Obj) => [e.name, e.value]))
        const delay = parseDuration(env.SHUTDOWN_DELAY ?? SETTINGS.shutdownDelay.default)
        const timeout = parseDuration(env.SHUTDOWN_TIMEOUT ?? SETTINGS.shutdownTimeout.default)
        assert.equal(config.shutdownDelay, delay)
        assert.equal(config.shutdownTimeout, timeout)
        const grace = pod.terminationGracePeriodSeconds
        assert.equal(typeof grace, 'number', 'terminationGracePeriodSeconds is set')
        // DESIGN.md §1: the process is out within the budget plus 1 s; 1 s more of margin.
        assert.ok(
          grace * 1000 >= delay + timeout + 2000,
          `terminationGracePeriodSeconds ${grace} < ${(delay + timeout) / 1000} + 2`,
        )
        if (name === 'sia-gateway') {
          assert.ok(delay > 0, 'the gateway waits SHUTDOWN_DELAY for endpoint removal before it drains')
        }
      })

      test(`${name}: probes, ports and paths are the configured ones`, () => {
        const d = find('Deployment', name)
        const c = siaOf(d)
        const config = configOf(c)
        const health = parseAddress(config.healthCheckAddr).port
        const metrics = parseAddress(config.metricsServerAddr).port
        assert.equal(c.readinessProbe.httpGet.path, '/readyz')
        assert.equal(c.livenessProbe.httpGet.path, config.healthCheckEndpoint)
        // The application starts once its sidecar is ready (tokens cached); the gateway's start is
        // its boot, not its Redis.
        assert.equal(
          c.startupProbe.httpGet.path,
          name === 'sia-gateway' ? config.healthCheckEndpoint : '/readyz',
        )
        for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) {
          assert.equal(portNumber(c, probe.httpGet.port), health, 'probes go to HEALTH_CHECK_ADDR')
        }
        assert.equal(portNumber(c, 'metrics'), metrics, 'the metrics port is METRICS_SERVER_ADDR')
        assert.equal(
          Number(d.spec.template.metadata.annotations['prometheus.io/port']),
          metrics,
          'prometheus.io/port is the metrics port',
        )
        // The kubelet must not give up on a boot the supervisor itself would still finish: each
        // enabled service's start is bounded by its startTimeout (START_TIMEOUT, 30s).
        const boot = SERVICES.filter((s) => config.services[s].enabled).reduce(
          (n, s) => n + config.services[s].startTimeout,
          0,
        )
        const window = (p: Obj) => (p.periodSeconds ?? 10) * (p.failureThreshold ?? 3)
        assert.ok(
          window(c.startupProbe) * 1000 >= boot,
          `startup window ${window(c.startupProbe)}s < ${boot / 1000}s`,
        )
        // Liveness lets the supervisor's watchdog heal a stuck worker before the kubelet restarts all.
        const watchdog = Math.max(...SERVICES.map((s) => config.services[s].watchdogTimeout))
        assert.ok(
          window(c.livenessProbe) * 1000 >= 2 * watchdog,
          `liveness window ${window(c.livenessProbe)}s < 2 x watchdogTimeout`,
        )
      })

      test(`${name}: memory request and limit are the measured constants; heap limits fit in them`, () => {
        const c = siaOf(find('Deployment', name))
        const mib = 2 ** 20
        assert.equal(quantityBytes(c.resources.limits.memory), DEFAULT_CONTAINER_MEMORY_MB * mib)
        assert.equal(quantityBytes(c.resources.requests.memory), DEFAULT_CONTAINER_MEMORY_REQUEST_MB * mib)
        assert.ok(
          DEFAULT_CONTAINER_MEMORY_REQUEST_MB >= MEASURED_IDLE_RSS_MB,
          'the request covers the idle RSS',
        )
        assert.ok(
          DEFAULT_CONTAINER_MEMORY_MB >= 1.25 * MEASURED_PEAK_RSS_MB,
          'the limit has headroom over the peak',
        )
        assert.equal(
          c.resources.limits.cpu,
          undefined,
          'no CPU limit: throttling would stall heartbeats and probes',
        )
        const config = configOf(c)
        const enabled = SERVICES.filter((s) => config.services[s].enabled)
        const limited = enabled.filter((s) => config.services[s].resourceLimits.maxOldGenerationSizeMb)
        if (limited.length === enabled.length) {
          const heap = (r: ResourceLimits) =>
            (r.maxOldGenerationSizeMb ?? 0) + (r.maxYoungGenerationSizeMb ?? 0)
          // The certificate service's CSR pool threads have limits of their own.
          const pool = enabled.includes('certificate') ? CSR_POOL_THREADS * heap(CSR_POOL_LIMITS) : 0
          const heaps = enabled.reduce((n, s) => n + heap(config.services[s].resourceLimits), pool)
          assert.ok(
            heaps + NON_HEAP_RSS_MB <= DEFAULT_CONTAINER_MEMORY_MB,
            `worker heap limits (${heaps} MiB) + ${NON_HEAP_RSS_MB} MiB exceed the container limit`,
          )
        } else {
          // Workers have no default heap limit yet: the container limit alone bounds the process.
          assert.deepEqual(limited, [], 'either every worker has a heap limit or none')
        }
      })

      test(`${name}: non-root, read-only, no capabilities, seccomp; DATA_DIR and every file on an emptyDir`, () => {
        const pod = find('Deployment', name).spec.template.spec
        const dockerfile = readFileSync(join(REPO, 'Dockerfile'), 'utf8')
        const imageUser = /^USER (\d+):(\d+)$/m.exec(dockerfile)
        assert.ok(imageUser, 'the Dockerfile runs as a numeric user')
        const c = siaOf(find('Deployment', name))
        const sc = c.securityContext
        assert.equal(sc.runAsNonRoot, true)
        assert.equal(sc.runAsUser ?? pod.securityContext?.runAsUser, Number(imageUser[1]), 'the image user')
        assert.equal(sc.readOnlyRootFilesystem, true)
        assert.equal(sc.allowPrivilegeEscalation, false)
        assert.deepEqual(sc.capabilities?.drop, ['ALL'])
        assert.equal((sc.seccompProfile ?? pod.securityContext?.seccompProfile)?.type, 'RuntimeDefault')
        const config = configOf(c)
        const emptyDirs = new Set(pod.volumes.filter((v: Obj) => v.emptyDir).map((v: Obj) => v.name))
        const writable = c.volumeMounts.filter((m: Obj) => emptyDirs.has(m.name) && !m.readOnly)
        const under = (path: string) =>
          writable.some((m: Obj) => path === m.mountPath || path.startsWith(`${m.mountPath}/`))
        assert.ok(
          writable.some((m: Obj) => m.mountPath === config.dataDir),
          `DATA_DIR ${config.dataDir} is an emptyDir`,
        )
        for (const path of [
          config.keyFile,
          config.certFile,
          config.caCertFile,
          config.roleCertDir,
          config.gatewaySinkFile,
        ]) {
          assert.ok(under(path), `${path} is on a writable emptyDir`)
        }
      })
    }

    test('gateway: 2 replicas, a PodDisruptionBudget and a Service that select them, zero-downtime rollout', () => {
      const d = find('Deployment', 'sia-gateway')
      const labels = d.spec.template.metadata.labels
      const selects = (selector: Record<string, string>) =>
        Object.entries(selector).every(([k, v]) => labels[k] === v)
      assert.ok(d.spec.replicas >= 2, 'at least 2 replicas')
      assert.equal(d.spec.strategy.rollingUpdate.maxUnavailable, 0)
      const pdb = find('PodDisruptionBudget', 'sia-gateway')
      assert.ok(selects(pdb.spec.selector.matchLabels), 'the PDB selects the gateway pods')
      assert.ok(
        pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < d.spec.replicas,
        'a drain can proceed, one by one',
      )
      const svc = find('Service', 'sia-gateway')
      assert.ok(selects(svc.spec.selector), 'the Service selects the gateway pods')
      const c = siaOf(d)
      const config = configOf(c)
      assert.ok(config.services.gateway.enabled)
      assert.equal(portNumber(c, svc.spec.ports[0].targetPort), parseAddress(config.gatewayAddr).port)
      assert.equal(config.services.token.enabled, false, 'no token server in the gateway pods')
      // Replicas share one dedup store: the Redis Service of the kit.
      const redis = new URL(config.redisUrl)
      const redisSvc = find('Service', redis.hostname)
      assert.equal(Number(redis.port), redisSvc.spec.ports[0].port)
    })

    test('gateway: the kubernetes sink writes the CRD the kit installs, with exactly the RBAC it needs', () => {
      const d = find('Deployment', 'sia-gateway')
      const c = siaOf(d)
      const config = configOf(c)
      assert.equal(config.gatewaySink, 'kubernetes')
      const plural = config.gatewayKubePlural || `${config.gatewayKubeKind.toLowerCase()}s`
      const crd = find('CustomResourceDefinition', `${plural}.${config.gatewayKubeGroup}`)
      assert.equal(crd.spec.group, config.gatewayKubeGroup)
      assert.equal(crd.spec.names.kind, config.gatewayKubeKind)
      assert.equal(crd.spec.names.plural, plural)
      assert.equal(crd.spec.scope, 'Namespaced')
      const version = crd.spec.versions.find((v: Obj) => v.name === config.gatewayKubeVersion)
      assert.ok(
        version?.served && version.storage,
        `version ${config.gatewayKubeVersion} is served and stored`,
      )
      // The schema describes the sink record field for field.
      const record = toSinkRecord(
        { status: 'firing', labels: { alertname: 'A' }, annotations: {}, startsAt: '2026-01-01T00:00:00Z' },
        'f00d',
        { version: '4', status: 'firing', receiver: 'r', alerts: [] } as never,
        new Date().toISOString(),
      )
      const spec = version.schema.openAPIV3Schema.properties.spec
      assert.deepEqual(Object.keys(spec.properties).sort(), Object.keys(record).sort())
      for (const field of spec.required) assert.ok(field in record)

      const binding = find('RoleBinding', 'sia-gateway-sink')
      assert.deepEqual(binding.subjects, [
        { kind: 'ServiceAccount', name: d.spec.template.spec.serviceAccountName },
      ])
      const role = find('Role', binding.roleRef.name)
      assert.deepEqual(role.rules, [
        { apiGroups: [config.gatewayKubeGroup], resources: [plural], verbs: ['create'] },
      ])
    })

    test('application: RBAC for the certificate backup to a Secret (server-side apply), bound to its account', () => {
      const d = find('Deployment', 'sia-app')
      const binding = find('RoleBinding', 'sia-app-cert-backup')
      assert.deepEqual(binding.subjects, [
        { kind: 'ServiceAccount', name: d.spec.template.spec.serviceAccountName },
      ])
      const role = find('Role', binding.roleRef.name)
      const verbs = new Set(
        role.rules
          .filter((r: Obj) => r.apiGroups.includes('') && r.resources.includes('secrets'))
          .flatMap((r: Obj) => r.verbs),
      )
      for (const verb of ['get', 'patch', 'create']) assert.ok(verbs.has(verb), `secrets: ${verb}`)
      assert.ok(!verbs.has('list') && !verbs.has('watch') && !verbs.has('delete'), 'nothing more on secrets')
    })

    test('AlertManager points at the gateway Service; the PodMonitor scrapes both pods', () => {
      const am = readYaml(join(KUBE, 'alertmanager', 'webhook-receiver.yaml')) as Obj
      const svc = find('Service', 'sia-gateway')
      const hook = am.receivers.find((r: Obj) => r.name === am.route.receiver).webhook_configs[0]
      assert.equal(
        hook.url,
        `http://${svc.metadata.name}.${kustomization.namespace}.svc:${svc.spec.ports[0].port}/api/v1/signals/prometheus`,
      )
      assert.equal(hook.send_resolved, true)
      assert.equal(hook.max_alerts, 0)

      const pm = find('PodMonitor', 'sia-supervisor')
      const names = pm.spec.selector.matchExpressions[0].values
      assert.deepEqual(
        [...names].sort(),
        sidecarPods.map((d) => d.spec.template.metadata.labels['app.kubernetes.io/name']).sort(),
      )
      const endpoint = pm.spec.podMetricsEndpoints[0]
      for (const d of sidecarPods) {
        const c = siaOf(d)
        const config = configOf(c)
        assert.equal(portNumber(c, endpoint.port), parseAddress(config.metricsServerAddr).port)
        assert.ok(
          parseDuration(endpoint.scrapeTimeout) > config.metricsScrapeTimeout + 1000,
          'Prometheus waits longer than the sidecar waits for a slow worker',
        )
      }
    })

    test('a running sidecar idles within the memory request', async (t) => {
      const sc = await startReady()
      t.after(() => void stop(sc, 'SIGKILL'))
      await sleep(3000) // past boot: module loading and the first scrape of everything
      const metrics = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
      const rss = Number(/^process_resident_memory_bytes (\S+)$/m.exec(metrics)?.[1])
      assert.ok(rss > 0, 'process_resident_memory_bytes is exposed')
      t.diagnostic(`idle RSS ${(rss / 2 ** 20).toFixed(0)} MiB on Node ${process.version}`)
      assert.ok(
        rss <= DEFAULT_CONTAINER_MEMORY_REQUEST_MB * 2 ** 20,
        `idle RSS ${(rss / 2 ** 20).toFixed(0)} MiB > request ${DEFAULT_CONTAINER_MEMORY_REQUEST_MB} MiB`,
      )
      assert.equal(await stop(sc), 0)
    })
  })

  /**
   * The container as the manifest runs it, on this machine: its env as written, but every path under
   * one of its volume mounts moved into a temporary directory (one per volume, as the kubelet mounts
   * them), every listening address on a free loopback port, and what the cluster would give (the pod
   * IP, the API server) given by the test.
   */
  function rehearse(
    d: Obj,
    extra: Record<string, string> = {},
  ): { env: Record<string, string>; volumes: Record<string, string> } {
    const c = siaOf(d)
    const root = mkdtempSync(join(tmpdir(), `sia-rehearsal-${d.metadata.name}-`))
    const volumes: Record<string, string> = {}
    for (const m of c.volumeMounts ?? []) {
      volumes[m.mountPath] = join(root, m.name)
      mkdirSync(volumes[m.mountPath]!)
    }
    const env: Record<string, string> = {}
    for (const e of c.env ?? []) {
      if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') env[e.name] = '127.0.0.1'
      else if (e.valueFrom?.fieldRef?.fieldPath === 'spec.serviceAccountName')
        env[e.name] = d.spec.template.spec.serviceAccountName
      else if (e.value === undefined) continue
      else if (/_ADDR$/.test(e.name) && e.value !== '') env[e.name] = '127.0.0.1:0'
      else {
        const mount = Object.keys(volumes).find((p) => e.value === p || e.value.startsWith(`${p}/`))
        env[e.name] = mount ? volumes[mount]! + e.value.slice(mount.length) : e.value
      }
    }
    return { env: { ...env, ...extra }, volumes }
  }

  describe('deploy/kubernetes: a dress rehearsal of each sidecar, as its manifest configures it', {
    concurrency: 1,
  }, () => {
    test('the application sidecar: ready, key and certificates where the application reads them, tokens on loopback', async (t) => {
      const d = find('Deployment', 'sia-app')
      const { env, volumes } = rehearse(d)
      const sc = await startReady({ env, dataDir: env.DATA_DIR })
      t.after(() => void stop(sc, 'SIGKILL'))
      assert.deepEqual(sc.events('config.unsupported'), [], 'every setting of the manifest is supported')
      const shared = volumes['/var/run/athenz']!
      assert.equal(statSync(join(shared, 'service.key.pem')).mode & 0o777, 0o600, 'the key, mode 0600')
      for (const f of ['service.cert.pem', 'ca.cert.pem', 'rolecerts/demo:role.reader.cert.pem']) {
        assert.match(readFileSync(join(shared, f), 'utf8'), /BEGIN CERTIFICATE/, f)
      }
      // What the application container does: POST /accesstoken on the loopback token server.
      const token = await fetch(`${await sc.url('token')}/accesstoken`, {
        method: 'POST',
        body: '{"domain":"demo","role":"reader"}',
      })
      assert.equal(token.status, 200)
      assert.equal((await fetch(`${await sc.url('healthcheck')}/readyz`)).status, 200)
      assert.equal(
        sc.events('server.listening').filter((r) => r.service === 'gateway').length,
        0,
        'no gateway',
      )
      assert.equal(await stop(sc), 0)
    })

    test('the gateway: ready on Redis, each new alert an AlertSignal in its namespace', async (t) => {
      if (!which('redis-server')) return t.skip('redis-server is not installed (.ci/run installs it)')
      const api = await startKubeApi({ token: 'sa-token' })
      t.after(() => api.close())
      const sa = mkdtempSync(join(tmpdir(), 'sia-rehearsal-sa-'))
      writeFileSync(join(sa, 'token'), 'sa-token\n')
      writeFileSync(join(sa, 'ca.crt'), api.caPem)
      const d = find('Deployment', 'sia-gateway')
      const { env } = rehearse(d, {
        // What the cluster gives the pod: the API server and the mounted service-account files.
        GATEWAY_KUBE_API: api.url,
        GATEWAY_KUBE_TOKEN_FILE: join(sa, 'token'),
        GATEWAY_KUBE_CA_FILE: join(sa, 'ca.crt'),
        GATEWAY_KUBE_NAMESPACE: kustomization.namespace!,
      })
      assert.equal(
        new URL(env.REDIS_URL!).hostname,
        'sia-gateway-redis',
        'the manifest names the Redis Service',
      )
      // Booted before its Redis is up (a slow image pull, a rescheduled Redis): started, so the
      // kubelet's startup probe passes, and not ready until Redis answers.
      const port = await freePort()
      env.REDIS_URL = `redis://127.0.0.1:${port}`
      const sc: Sidecar = await startReady({ env, dataDir: env.DATA_DIR })
      t.after(() => void stop(sc, 'SIGKILL'))
      const probe = async (p: Obj) => (await fetch(`${await sc.url('healthcheck')}${p.httpGet.path}`)).status
      const sia = siaOf(d)
      assert.equal(await probe(sia.startupProbe), 200, 'the startup probe passes without Redis')
      assert.equal(await probe(sia.readinessProbe), 503, 'not ready without Redis')
      const late = await startRedis(port)
      t.after(() => late.stop())
      await eventually(async () => ((await probe(sia.readinessProbe)) === 200 ? true : undefined))
      assert.deepEqual(sc.events('config.unsupported'), [], 'every setting of the manifest is supported')
      const hook = await fetch(`${await sc.url('gateway')}/api/v1/signals/prometheus`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: readFileSync(join(REPO, 'test', 'fixtures', 'alertmanager.json')),
      })
      assert.equal(hook.status, 201)
      const crd = find('CustomResourceDefinition', 'alertsignals.sia.athenz.io')
      const created = [...api.objects.values()]
      assert.equal(created.length, 2, 'one AlertSignal per alert of the fixture')
      const schema = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec
      for (const o of created) {
        assert.equal(o.apiVersion, `${crd.spec.group}/${crd.spec.versions[0].name}`)
        assert.equal(o.kind, crd.spec.names.kind)
        assert.equal(o.metadata.namespace, kustomization.namespace)
        for (const field of schema.required) assert.ok(o.spec && field in o.spec, `spec.${field}`)
        for (const [field, value] of Object.entries(o.spec ?? {})) {
          const type = schema.properties[field]?.type
          assert.ok(type, `spec.${field} is in the CRD's schema`)
          if (value !== null)
            assert.equal(Array.isArray(value) ? 'array' : typeof value, type, `spec.${field}`)
        }
      }
      assert.ok(
        api.requests.every(
          (r) =>
            r.path ===
              `/apis/${crd.spec.group}/${crd.spec.versions[0].name}/namespaces/${kustomization.namespace}/${crd.spec.names.plural}` &&
            r.method === 'POST',
        ),
        'only creates, on the resource the Role grants',
      )
      assert.equal(await stop(sc), 0)
    })
  })
})
