import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { loadConfig } from '../shared/config/load.js'
import type { Config } from '../shared/config/types.js'
import { buildCaCert, buildCsr, signCsr } from '../shared/identity/csr.js'
import { readOwnIdentity } from '../shared/identity/identity.js'
import { authorityPaths, generateRsaKey, loadOrCreateAuthority } from '../shared/identity/local-authority.js'
import { issueCertificate } from './doubles/issue-certificate.js'

const fresh = () => mkdtempSync(join(tmpdir(), 'sia-authority-'))

/** The authority on disk is a pair, its key 0600, and it is the one loaded. */
function assertWhole(
  dataDir: string,
  loaded: { certPem: string; cert: { checkPrivateKey(k: never): boolean } },
) {
  const paths = authorityPaths(dataDir)
  assert.equal(readFileSync(paths.cert, 'utf8'), loaded.certPem)
  assert.equal(statSync(paths.key).mode & 0o777, 0o600)
  assert.deepEqual(
    readdirSync(dataDir).filter((f) => f.endsWith('.tmp')),
    [],
    'no staging directory left',
  )
}

test('two workers creating the authority at once end with one, the same for both', async () => {
  const dataDir = fresh()
  const [a, b] = await Promise.all([loadOrCreateAuthority(dataDir), loadOrCreateAuthority(dataDir)])
  assert.equal(a.certPem, b.certPem)
  assert.ok(a.cert.checkPrivateKey(a.key))
  assertWhole(dataDir, a)
  assert.equal((await loadOrCreateAuthority(dataDir)).certPem, a.certPem, 'loaded, not made again')
})

test('an authority left half-made or mismatched is set aside and made anew, a pair; an empty or littered directory too', async () => {
  const other = await loadOrCreateAuthority(fresh())
  const otherKey = other.key.export({ type: 'pkcs8', format: 'pem' }).toString()
  const cases: Record<
    string,
    (p: ReturnType<typeof authorityPaths>, good: { cert: string; key: string }) => void
  > = {
    'a certificate, no key': (p) => rmSync(p.key),
    'a key, no certificate': (p) => rmSync(p.cert),
    'a key of another authority': (p) => writeFileSync(p.key, otherKey),
    'an empty directory (an older version)': (p) => {
      rmSync(p.dir, { recursive: true })
      mkdirSync(p.dir)
    },
    "an older version's temporary files, no pair": (p, good) => {
      rmSync(p.dir, { recursive: true })
      mkdirSync(p.dir)
      writeFileSync(`${p.key}.1.2.tmp`, good.key)
    },
  }
  for (const [what, breakIt] of Object.entries(cases)) {
    const dataDir = fresh()
    const first = await loadOrCreateAuthority(dataDir)
    const paths = authorityPaths(dataDir)
    breakIt(paths, { cert: readFileSync(paths.cert, 'utf8'), key: readFileSync(paths.key, 'utf8') })
    const again = await loadOrCreateAuthority(dataDir)
    assert.ok(again.cert.checkPrivateKey(again.key), what)
    assert.notEqual(again.certPem, first.certPem, what)
    assertWhole(dataDir, again)
    const setAside = readdirSync(dataDir).filter((f) => f.startsWith('authority.broken-'))
    assert.equal(setAside.length, what.startsWith('an empty') ? 0 : 1, `${what}: kept for a look`)
  }
})

test('an authority directory no rename can replace (a symlink to one, a mount point): the pair is made inside it, and repaired there', async (t) => {
  const cases: Record<string, () => string | undefined> = {
    'a symlink to a directory elsewhere': () => {
      const dataDir = fresh()
      symlinkSync(mkdtempSync(join(tmpdir(), 'sia-authority-volume-')), authorityPaths(dataDir).dir)
      return dataDir
    },
    "a bind mount of the same file system (its device is its parent's)": () => {
      const dataDir = fresh()
      const dir = authorityPaths(dataDir).dir
      mkdirSync(dir)
      const source = mkdtempSync(join(tmpdir(), 'sia-authority-bind-'))
      if (spawnSync('mount', ['--bind', source, dir]).status !== 0) return undefined
      t.after(() => void spawnSync('umount', ['-l', dir]))
      return dataDir
    },
    'a mount point': () => {
      const dataDir = fresh()
      const dir = authorityPaths(dataDir).dir
      mkdirSync(dir)
      if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', dir]).status !== 0) return undefined
      t.after(() => void spawnSync('umount', ['-l', dir]))
      return dataDir
    },
  }
  for (const [what, make] of Object.entries(cases)) {
    const dataDir = make()
    if (!dataDir) {
      t.diagnostic(`${what}: cannot mount a tmpfs here (needs root)`)
      continue
    }
    const paths = authorityPaths(dataDir)
    const before = lstatSync(paths.dir)
    const first = await loadOrCreateAuthority(dataDir)
    assertWhole(dataDir, first)
    assert.equal((await loadOrCreateAuthority(dataDir)).certPem, first.certPem, `${what}: loaded again`)
    rmSync(paths.key) // half of it lost
    const again = await loadOrCreateAuthority(dataDir)
    assert.ok(again.cert.checkPrivateKey(again.key), what)
    assert.notEqual(again.certPem, first.certPem, what)
    assertWhole(dataDir, again)
    const after = lstatSync(paths.dir)
    assert.deepEqual(
      [after.isSymbolicLink(), after.ino],
      [before.isSymbolicLink(), before.ino],
      `${what}: kept in place`,
    )
    assert.ok(
      readdirSync(paths.dir).some((f) => f.startsWith('ca.cert.pem.broken-')),
      `${what}: the broken certificate set aside beside it`,
    )
  }
})

const DAY = 24 * 3600_000

/** An authority on disk valid from `notBefore` to `notAfter` (made while the clock was wrong); its key. */
async function authorityValid(dataDir: string, notBefore: number, notAfter: number): Promise<string> {
  const { privateKeyPem: keyPem } = await generateRsaKey()
  const paths = authorityPaths(dataDir)
  mkdirSync(paths.dir)
  writeFileSync(paths.key, keyPem, { mode: 0o600 })
  writeFileSync(
    paths.cert,
    buildCaCert({
      keyPem,
      commonName: 'sia-supervisor local authority',
      organization: 'sia-supervisor',
      notBefore,
      notAfter,
    }),
  )
  return keyPem
}

test('an authority expired, within a day of its end, or not yet valid is set aside and made anew; one with days left is kept', async () => {
  const now = Date.now()
  const cases: Record<string, [notBefore: number, notAfter: number, kept: boolean]> = {
    'expired (made with the clock years behind)': [now - 11 * 365 * DAY, now - 365 * DAY, false],
    'ending within the day': [now - 10 * DAY, now + DAY / 2, false],
    'not yet valid (made with the clock ahead)': [now + DAY, now + 3650 * DAY, false],
    'two days left': [now - 10 * DAY, now + 2 * DAY, true],
    // The clock stepped back two minutes since (an NTP correction): within a certificate's skew.
    'valid from two minutes on': [now + 2 * 60_000, now + 3650 * DAY, true],
  }
  for (const [what, [notBefore, notAfter, kept]] of Object.entries(cases)) {
    const dataDir = fresh()
    await authorityValid(dataDir, notBefore, notAfter)
    const onDisk = readFileSync(authorityPaths(dataDir).cert, 'utf8')
    const loaded = await loadOrCreateAuthority(dataDir)
    const setAside = readdirSync(dataDir).filter((f) => f.startsWith('authority.broken-'))
    if (kept) {
      assert.equal(loaded.certPem, onDisk, what)
      assert.deepEqual(setAside, [], what)
      continue
    }
    assert.notEqual(loaded.certPem, onDisk, what)
    assert.ok(Date.parse(loaded.cert.validFrom) <= Date.now(), `${what}: the new one is valid now`)
    assert.ok(Date.parse(loaded.cert.validTo) > Date.now() + 365 * DAY, `${what}: for years`)
    assertWhole(dataDir, loaded)
    assert.equal(setAside.length, 1, `${what}: kept for a look`)
  }
})

test('a certificate never outlives the authority that signs it', async () => {
  const dataDir = fresh()
  const caKeyPem = await authorityValid(dataDir, Date.now() - DAY, Date.now() + 2 * DAY)
  const ca = await loadOrCreateAuthority(dataDir)
  const { privateKeyPem: keyPem } = await generateRsaKey()
  const csrPem = buildCsr({ keyPem, commonName: 'my.team.api', dnsNames: [], uris: [], ips: [] })
  const leaf = new X509Certificate(signCsr({ caKeyPem, caCertPem: ca.certPem, csrPem, validityMs: 30 * DAY }))
  assert.equal(leaf.validTo, ca.cert.validTo)
  assert.ok(leaf.verify(ca.cert.publicKey))
})

test('a certificate on disk from an authority that has expired is not reused at start', async () => {
  const dataDir = fresh()
  const caKeyPem = await authorityValid(dataDir, Date.now() - 11 * 365 * DAY, Date.now() - DAY)
  const caCertPem = readFileSync(authorityPaths(dataDir).cert, 'utf8')
  const inv = loadConfig([], { DATA_DIR: dataDir, ATHENZ_DOMAIN: 'my.team', SERVICEACCOUNT: 'api' })
  assert.equal(inv.kind, 'run')
  const cfg = (inv as { config: Config }).config
  const { privateKeyPem: keyPem, publicKeyPem } = await generateRsaKey()
  // What an older version issued and wrote: valid, its end not capped at its authority's.
  const ca = { certPem: caCertPem, key: createPrivateKey(caKeyPem), cert: new X509Certificate(caCertPem) }
  writeFileSync(cfg.keyFile, keyPem, { mode: 0o600 })
  writeFileSync(
    cfg.certFile,
    issueCertificate(ca, { publicKeyPem, commonName: 'my.team.api', validityMs: DAY }),
  )
  writeFileSync(cfg.caCertFile, caCertPem)
  assert.equal(await readOwnIdentity(cfg), undefined)
})
