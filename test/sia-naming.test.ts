import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it, test } from 'node:test'
import { loadConfig } from '../shared/config/load.js'
import type { Config } from '../shared/config/types.js'
import { roleCertPath } from '../shared/identity/naming.js'
import { parseSubject } from '../shared/identity/subject.js'
import { providerEnv, startZtsDouble, type ZtsDouble } from './doubles/zts.js'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

const mode = (f: string) => statSync(f).mode & 0o777
const x509 = (f: string) => new X509Certificate(readFileSync(f))

function config(env: Record<string, string>): Config {
  const inv = loadConfig([], { DATA_DIR: mkdtempSync(join(tmpdir(), 'sia-naming-')), ...env })
  assert.equal(inv.kind, 'run')
  return (inv as { config: Config }).config
}

describe('naming and subject, through the CLI against the ZTS double', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sia-naming-'))
  let zts: ZtsDouble
  let sc: Sidecar

  before(async () => {
    zts = await startZtsDouble()
    sc = await startReady({
      dataDir: dir,
      env: {
        ...providerEnv(zts),
        NAMESPACE: 'payments',
        ATHENZ_PREFIX: 'k8s.',
        ATHENZ_SUFFIX: '.prod',
        SERVICEACCOUNT: 'api',
        DNS_SUFFIX: 'zts.test',
        POD_UID: 'pod-1',
        POD_IP: '10.0.0.9',
        CERT_SUBJECT: 'O=Example\\, Inc.,OU=Platform+OU=Identity,L=T\\C5\\8Dky\\C5\\8D,C=JP',
        CERT_EXTRA_SAN_DNS: 'api.example.com, *.api.internal',
        KEY_FILE: `${join(dir, 'a', 'key.pem')},${join(dir, 'b', 'service.key')}`,
        CERT_FILE: `${join(dir, 'a', 'cert.pem')},${join(dir, 'b', 'service.crt')}`,
        TARGET_DOMAIN_ROLES: 'demo:role.reader,other.dom:role.writer',
        ROLE_CERT_NAMING_FORMAT: join(dir, 'rc', '{{domain}}{{delimiter}}{{role}}.crt'),
        ROLE_CERT_FILENAME_DELIMITER: '_',
        ROLE_CERT_KEY_FILE_OUTPUT: 'true',
        ROLE_CERT_KEY_NAMING_FORMAT: join(dir, 'rk', '{{role}}@{{domain}}.key'),
        ACCESS_TOKEN_NAMING_FORMAT: join(dir, 'at', '{{domain}}{{delimiter}}{{role}}.jwt'),
        ACCESS_TOKEN_FILENAME_DELIMITER: '__',
        TOKEN_DIR: join(dir, 'tokens'),
        ROLE_TOKEN_FILENAME_DELIMITER: '+',
      },
    })
  })
  after(async () => {
    if (sc) assert.equal(await stop(sc), 0)
    await zts?.close()
  })

  it('derives the Athenz domain from ATHENZ_PREFIX + NAMESPACE + ATHENZ_SUFFIX', () => {
    const reg = zts.received.find((r) => r.route === 'register')!
    assert.equal((reg.body as { domain: string }).domain, 'k8s.payments.prod')
    assert.equal(reg.csr!.commonName, 'k8s.payments.prod.api')
    assert.deepEqual(reg.csr!.uris, [
      'spiffe://k8s.payments.prod/sa/api',
      'athenz://instanceid/athenz.k8s/pod-1',
    ])
  })

  it('puts CERT_SUBJECT after the CN and CERT_EXTRA_SAN_DNS after SIA’s SANs', () => {
    const reg = zts.received.find((r) => r.route === 'register')!
    assert.deepEqual(reg.csr!.subjectList, [
      'CN=k8s.payments.prod.api',
      'O=Example, Inc.',
      'OU=Platform',
      'OU=Identity',
      'L=Tōkyō',
      'C=JP',
    ])
    const cert = x509(join(dir, 'a', 'cert.pem'))
    assert.equal(
      cert.subject,
      'CN=k8s.payments.prod.api\nO=Example\\, Inc.\nOU=Platform\nOU=Identity\nL=Tōkyō\nC=JP',
    )
    assert.deepEqual(cert.subjectAltName!.split(', '), [
      'DNS:api.k8s-payments-prod.zts.test',
      'DNS:*.api.k8s-payments-prod.zts.test',
      'DNS:pod-1.instanceid.athenz.zts.test',
      'DNS:api.example.com',
      'DNS:*.api.internal',
      'URI:spiffe://k8s.payments.prod/sa/api',
      'URI:athenz://instanceid/athenz.k8s/pod-1',
      'IP Address:10.0.0.9',
    ])
    // Role certificates keep SIA's role subject: CERT_SUBJECT is the service certificate's.
    assert.equal(x509(join(dir, 'rc', 'demo_reader.crt')).subject, 'CN=demo:role.reader\nOU=Athenz\nC=US')
  })

  it('writes every KEY_FILE and CERT_FILE path (keys 0600) with the same identity', () => {
    const keys = [join(dir, 'a', 'key.pem'), join(dir, 'b', 'service.key')]
    const certs = [join(dir, 'a', 'cert.pem'), join(dir, 'b', 'service.crt')]
    for (const k of keys) assert.equal(mode(k), 0o600, k)
    for (const c of certs) assert.equal(mode(c), 0o644, c)
    assert.equal(readFileSync(keys[0]!, 'utf8'), readFileSync(keys[1]!, 'utf8'))
    assert.equal(readFileSync(certs[0]!, 'utf8'), readFileSync(certs[1]!, 'utf8'))
    assert.ok(x509(certs[1]!).checkPrivateKey(createKey(keys[1]!)))
  })

  it('names role certificates, their keys and token files by the templates and delimiters', () => {
    for (const [domain, role] of [
      ['demo', 'reader'],
      ['other.dom', 'writer'],
    ] as const) {
      const certFile = join(dir, 'rc', `${domain}_${role}.crt`)
      const keyFile = join(dir, 'rk', `${role}@${domain}.key`)
      assert.equal(mode(certFile), 0o644)
      assert.equal(mode(keyFile), 0o600)
      const c = x509(certFile)
      assert.equal(c.subject.split('\n')[0], `CN=${domain}:role.${role}`)
      assert.ok(c.checkPrivateKey(createKey(keyFile)))
      const at = join(dir, 'at', `${domain}__${role}.jwt`)
      assert.equal(mode(at), 0o600)
      assert.match(readFileSync(at, 'utf8'), /^[\w-]+\.[\w-]+\.[\w-]+$/)
      // ROLE_TOKEN_NAMING_FORMAT unset: TOKEN_DIR with SIA's name and ROLE_TOKEN_FILENAME_DELIMITER.
      const rt = join(dir, 'tokens', `${domain}+${role}.roletoken`)
      assert.equal(mode(rt), 0o600)
      assert.match(readFileSync(rt, 'utf8'), new RegExp(`^v=Z1;d=${domain.replace('.', '\\.')};r=${role};`))
    }
  })

  it('exports x509 metrics for every CERT_FILE path, token metrics with k8s_namespace', async () => {
    const text = await (await fetch(`${await sc.url('metrics')}/metrics`)).text()
    for (const f of [join(dir, 'a', 'cert.pem'), join(dir, 'b', 'service.crt')]) {
      assert.ok(text.includes(`filepath="${f}"`), f)
    }
    // NAMESPACE is set, POD_NAME is not: only k8s_namespace labels the token metrics.
    assert.match(text, /^cached_token_entries\{[^}]*k8s_namespace="payments"[^}]*\} \d+$/m)
    assert.ok(!text.includes('k8s_pod='))
  })
})

const createKey = (file: string) => createPrivateKey(readFileSync(file))

describe('domain derivation (as SIA’s NamespaceToDomain)', () => {
  test('ATHENZ_DOMAIN beats NAMESPACE; prefix and suffix apply to either; stray dots are trimmed', () => {
    assert.equal(config({ NAMESPACE: 'team' }).athenzDomain, 'team')
    assert.equal(config({ NAMESPACE: 'team', ATHENZ_DOMAIN: 'my.dom' }).athenzDomain, 'my.dom')
    assert.equal(
      config({ NAMESPACE: 'team', ATHENZ_DOMAIN: 'my.dom', ATHENZ_PREFIX: 'a.', ATHENZ_SUFFIX: '.z' })
        .athenzDomain,
      'a.my.dom.z',
    )
    assert.equal(config({ NAMESPACE: 'team', ATHENZ_SUFFIX: '.' }).athenzDomain, 'team')
    assert.equal(config({}).athenzDomain, 'sia.local', 'outside Kubernetes, the embedded default')
  })

  test('comma-separated KEY_FILE/CERT_FILE: the first is the one read', () => {
    const c = config({ KEY_FILE: '/a/k.pem, /b/k.pem', CERT_FILE: '/a/c.pem' })
    assert.equal(c.keyFile, '/a/k.pem')
    assert.deepEqual(c.keyFiles, ['/a/k.pem', '/b/k.pem'])
    assert.deepEqual(c.certFiles, ['/a/c.pem'])
  })

  test('the default role key template sits beside the role certificate template', () => {
    const c = config({
      ROLE_CERT_NAMING_FORMAT: '/r/{{domain}}/{{role}}.pem',
      TARGET_DOMAIN_ROLES: 'd:role.r',
    })
    const t = { domain: 'd', role: 'r' }
    assert.equal(roleCertPath(c, t), '/r/d/r.pem')
    assert.equal(roleCertPath(c, t, 'key'), '/r/d/d:role.r.key.pem')
    const plain = config({ ROLECERT_DIR: '/rc', TARGET_DOMAIN_ROLES: 'd:role.r' })
    assert.equal(roleCertPath(plain, t), '/rc/d:role.r.cert.pem')
    assert.equal(roleCertPath(plain, t, 'key'), '/rc/d:role.r.key.pem')
  })
})

describe('CERT_SUBJECT parsing (RFC 4514)', () => {
  test('escapes, hex UTF-8, multi-valued RDNs, OIDs and case-insensitive types', () => {
    assert.deepEqual(parseSubject('o=A\\+B\\, C,2.5.4.11=x+OU=y,ST=\\E6\\9D\\B1 ,C=US'), [
      { type: 'O', value: 'A+B, C' },
      { type: 'OU', value: 'x' },
      { type: 'OU', value: 'y' },
      { type: 'ST', value: '東' },
      { type: 'C', value: 'US' },
    ])
    assert.deepEqual(parseSubject('STREET=1 Main St,POSTALCODE=100-0001,L=\\ lead'), [
      { type: 'STREET', value: '1 Main St' },
      { type: 'POSTALCODE', value: '100-0001' },
      { type: 'L', value: ' lead' },
    ])
  })
})

// In process: how the CLI says it (one stderr line, exit 2, nothing started) is config.test's.
describe('invalid forms: refused at load naming the setting, in one line', () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ CERT_SUBJECT: 'CN=evil,O=x' }, /CERT_SUBJECT: CN is not allowed/],
    [{ CERT_SUBJECT: 'O=x,commonName=evil' }, /CERT_SUBJECT: CN is not allowed/],
    [{ CERT_SUBJECT: 'O=x,SERIALNUMBER=1' }, /CERT_SUBJECT: SERIALNUMBER is not allowed/],
    [{ CERT_SUBJECT: '2.5.4.5=1' }, /CERT_SUBJECT: SERIALNUMBER is not allowed/],
    [{ CERT_SUBJECT: 'DC=example' }, /CERT_SUBJECT: unsupported attribute type "DC"/],
    [{ CERT_SUBJECT: 'O=' }, /CERT_SUBJECT: O is empty/],
    [{ CERT_SUBJECT: 'Example Inc' }, /CERT_SUBJECT: .*has no "="/],
    [{ CERT_SUBJECT: 'O=a,' }, /CERT_SUBJECT: a trailing separator/],
    [{ CERT_SUBJECT: 'O=a"b' }, /CERT_SUBJECT: O has an unescaped/],
    [{ CERT_SUBJECT: 'O=\\q' }, /CERT_SUBJECT: O has an invalid escape/],
    [{ CERT_SUBJECT: 'O=#04024869' }, /CERT_SUBJECT: the hex \(BER\) form/],
    [
      { CERT_EXTRA_SAN_DNS: 'ok.example.com,not_a name' },
      /CERT_EXTRA_SAN_DNS: "not_a name" is not a DNS name/,
    ],
    [{ CERT_EXTRA_SAN_DNS: 'a..b' }, /CERT_EXTRA_SAN_DNS/],
    [
      { ROLE_CERT_NAMING_FORMAT: '/r/{{domain}}{{role}}', ROLECERT_DIR: '/r' },
      /ROLE_CERT_NAMING_FORMAT: .*ROLECERT_DIR/,
    ],
    [
      { ROLE_CERT_KEY_NAMING_FORMAT: '/r/{{domain}}{{role}}', ROLECERT_DIR: '/r' },
      /ROLE_CERT_KEY_NAMING_FORMAT: .*ROLECERT_DIR/,
    ],
    [
      { ROLE_CERT_NAMING_FORMAT: '/r/{{Domain}}.pem' },
      /ROLE_CERT_NAMING_FORMAT: unknown placeholder "\{\{Domain\}\}"/,
    ],
    [{ ACCESS_TOKEN_NAMING_FORMAT: '/t/{{domain}.at' }, /ACCESS_TOKEN_NAMING_FORMAT: an unbalanced/],
    [{ ROLE_TOKEN_NAMING_FORMAT: '/t/{{scope}}' }, /ROLE_TOKEN_NAMING_FORMAT: unknown placeholder/],
    [
      { ROLE_CERT_NAMING_FORMAT: '/r/{{domain}}.pem', TARGET_DOMAIN_ROLES: 'd:role.a,d:role.b' },
      /ROLE_CERT_NAMING_FORMAT: d:role.a's role certificate and d:role.b's role certificate would both be written to \/r\/d.pem: use \{\{domain\}\} and \{\{role\}\}/,
    ],
    // One output over another of another kind, or over the service's own files.
    [
      {
        TARGET_DOMAIN_ROLES: 'd:role.a',
        ROLECERT_DIR: '/r',
        ROLE_TOKEN_NAMING_FORMAT: '/r/{{domain}}{{delimiter}}{{role}}.cert.pem',
      },
      /ROLE_TOKEN_NAMING_FORMAT: d:role.a's role certificate and d:role.a's role token would both be written to \/r\/d:role.a.cert.pem$/m,
    ],
    [
      {
        TARGET_DOMAIN_ROLES: 'd:role.a',
        ACCESS_TOKEN_NAMING_FORMAT: '/t/{{domain}}.tok',
        ROLE_TOKEN_NAMING_FORMAT: '/t/{{domain}}.tok',
      },
      /ROLE_TOKEN_NAMING_FORMAT: d:role.a's access token and d:role.a's role token would both be written to \/t\/d.tok$/m,
    ],
    [
      // CA_CERT_FILE's default, DATA_DIR/ca.pem.
      { TARGET_DOMAIN_ROLES: 'd:role.a', ACCESS_TOKEN_NAMING_FORMAT: '/var/lib/sia/ca.pem' },
      /ACCESS_TOKEN_NAMING_FORMAT: the CA certificate \(CA_CERT_FILE\) and d:role.a's access token would both be written to \/var\/lib\/sia\/ca.pem$/m,
    ],
    [
      {
        TARGET_DOMAIN_ROLES: 'd:role.a',
        KEY_FILE: '/k/d.key',
        ACCESS_TOKEN_NAMING_FORMAT: '/k/{{domain}}.key',
      },
      /ACCESS_TOKEN_NAMING_FORMAT: the service key \(KEY_FILE\) and d:role.a's access token would both be written to \/k\/d.key$/m,
    ],
    [
      { ACCESS_TOKEN_NAMING_FORMAT: '/t/{{role}}', TARGET_DOMAIN_ROLES: 'x:role.r,y:role.r' },
      /ACCESS_TOKEN_NAMING_FORMAT: .*both be written/,
    ],
    // The service's own files over each other: init exited 0 with no key on disk.
    [
      { KEY_FILE: '/id/id.pem', CERT_FILE: '/id/id.pem' },
      /CERT_FILE: the service key \(KEY_FILE\) and the service certificate \(CERT_FILE\) would both be written to \/id\/id.pem$/m,
    ],
    [
      { KEY_FILE: '/id/k.pem', CERT_FILE: '/id/a.pem,/id/k.pem' },
      /CERT_FILE: the service key \(KEY_FILE\) and the service certificate .* \/id\/k.pem$/m,
    ],
    [
      { CERT_FILE: '/id/c.pem', CA_CERT_FILE: '/id/c.pem' },
      /CA_CERT_FILE: the service certificate \(CERT_FILE\) and the CA certificate \(CA_CERT_FILE\) would both be written to \/id\/c.pem$/m,
    ],
    [
      { KEY_FILE: '/var/lib/sia/authority/ca.key.pem' },
      /KEY_FILE: the service key \(KEY_FILE\) would be written inside the local authority's directory \/var\/lib\/sia\/authority$/m,
    ],
    [
      { GATEWAY_SINK_FILE: '/var/lib/sia/key.pem' },
      /GATEWAY_SINK_FILE: the service key \(KEY_FILE\) and the gateway's alerts \(GATEWAY_SINK_FILE\) would both be written to/,
    ],
    [{ ATHENZ_DOMAIN: 'a/b' }, /ATHENZ_DOMAIN: the Athenz domain "a\/b"/],
    [{ NAMESPACE: 'team', ATHENZ_PREFIX: '../' }, /NAMESPACE: the Athenz domain/],
    [{ SERVICEACCOUNT: '../x' }, /SERVICEACCOUNT/],
  ]
  test('a file listed twice, a disabled gateway, or the files provider reading key and cert from one PEM: no clash', () => {
    const ok = (env: Record<string, string>) => loadConfig([], { DATA_DIR: '/var/lib/sia', ...env }).kind
    assert.equal(ok({ KEY_FILE: '/id/k.pem,/id/k.pem' }), 'run')
    assert.equal(ok({ GATEWAY_SINK_FILE: '/var/lib/sia/key.pem', GATEWAY_ADDR: '' }), 'run')
    assert.equal(
      ok({
        GATEWAY_SINK_FILE: '/var/lib/sia/key.pem',
        GATEWAY_SINK: 'redis-stream',
        REDIS_URL: 'redis://x:6379',
      }),
      'run',
    )
    const files = { ENDPOINT: 'https://zts.example/zts/v1', KEY_FILE: '/id/id.pem', CERT_FILE: '/id/id.pem' }
    assert.equal(ok(files), 'run')
    assert.equal(ok({ ...files, CA_CERT_FILE: '/id/id.pem' }), 'run', 'key, certificate and CA in one PEM')
    // The local authority's directory is the local provider's only.
    assert.equal(ok({ ...files, KEY_FILE: '/var/lib/sia/authority/key.pem', CERT_FILE: '/c.pem' }), 'run')
    // What the files provider reads is no output's either.
    assert.throws(
      () =>
        loadConfig([], {
          DATA_DIR: '/var/lib/sia',
          ...files,
          TARGET_DOMAIN_ROLES: 'd:role.a',
          ROLE_CERT_NAMING_FORMAT: '/id/id.pem',
        }),
      /ROLE_CERT_NAMING_FORMAT: the identity the files provider reads \(KEY_FILE, CERT_FILE, CA_CERT_FILE\) and d:role.a's role certificate would both be written to \/id\/id.pem/,
    )
  })
  for (const [env, reason] of cases) {
    test(JSON.stringify(env), () => {
      assert.throws(
        () => loadConfig([], { DATA_DIR: '/var/lib/sia', ...env }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_CONFIG')
          assert.match(err.message, /^invalid setting /)
          assert.match(err.message, reason)
          assert.equal(err.message.split('\n').length, 1)
          return true
        },
      )
    })
  }
})
