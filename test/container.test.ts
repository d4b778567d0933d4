import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chownSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { ENTRYPOINT_INIT, ENTRYPOINT_NODE_FLAGS, IMAGE_NODE_FLAGS } from './support/image.js'
import { type Sidecar, startSidecar } from './support/sidecar.js'

/**
 * The container image, checked without a container engine: the built CLI started as the Dockerfile's
 * ENTRYPOINT starts it (`tini -- node --disable-sigusr1 … dist/supervisor/cli.js` in the app folder),
 * tini as PID 1 of a PID namespace of its own and node its child, as an unprivileged user (65534, nobody), with every file system
 * read-only (readOnlyRootFilesystem) except DATA_DIR, the volume. The network is the host's, so the
 * test reaches the sidecar's servers on loopback.
 */

/** The app folder: dist/ (with this file), node_modules/ and package.json, as /app in the image. */
const APP_URL = new URL('../../', import.meta.url)
const APP = fileURLToPath(APP_URL)
const ENTRYPOINT = [...IMAGE_NODE_FLAGS, 'dist/supervisor/cli.js']
const USER = 65534

/**
 * Run by `unshare --pid --fork --mount-proc` as PID 1 of the new PID namespace (and in a private
 * mount namespace): DATA_DIR becomes a mount of its own, then the file systems of /, of the app
 * folder and of the temporary directory are remounted read-only (for this namespace only; DATA_DIR's
 * mount keeps its own flag), then `setpriv` drops to the unprivileged user and execs the command,
 * which keeps PID 1.
 */
const SANDBOX = `set -eu
data=$1; shift
mount --bind "$data" "$data"
for dir in / "$PWD" "${tmpdir()}"; do mount -o remount,ro,bind "$(findmnt -n -o TARGET --target "$dir")"; done
exec setpriv --reuid=${USER} --regid=${USER} --clear-groups -- "$@"`

function sandboxed(dataDir: string, argv: string[]): string[] {
  return [
    '--pid',
    '--fork',
    '--mount-proc',
    '--propagation',
    'private',
    'sh',
    '-c',
    SANDBOX,
    'sandbox',
    dataDir,
    ...argv,
  ]
}

/**
 * Why this machine cannot build the sandbox (no namespaces, not root, no setpriv, a checkout the
 * unprivileged user cannot read), or undefined. A sandbox that builds but is not what it claims
 * (the app folder writable, DATA_DIR not, not PID 1) is a failure, not a reason to skip.
 */
function cannotSandbox(): string | undefined {
  if (process.platform !== 'linux') return 'PID and mount namespaces need Linux'
  if (process.getuid?.() !== 0) return 'creating namespaces and switching to an unprivileged user needs root'
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-container-probe-'))
  try {
    chownSync(dataDir, USER, USER)
    const probe = `
      if touch .probe 2>/dev/null; then echo 'the app folder is writable'; exit 10; fi
      if touch "${tmpdir()}/.sia-probe-$$" 2>/dev/null; then echo 'the temporary directory is writable'; exit 10; fi
      touch "$DATA_DIR/probe" || { echo 'DATA_DIR is not writable'; exit 10; }
      [ "$$" = 1 ] || { echo "PID $$, not 1"; exit 10; }
      [ "$(id -u)" = ${USER} ] || { echo "uid $(id -u)"; exit 10; }
      "$0" -e "require('node:fs').accessSync('dist/supervisor/cli.js')" || exit 11`
    const r = spawnSync('unshare', sandboxed(dataDir, ['sh', '-c', probe, process.execPath]), {
      cwd: APP,
      env: { PATH: process.env.PATH ?? '', DATA_DIR: dataDir },
      encoding: 'utf8',
      timeout: 10_000,
    })
    if (r.error) return `cannot run unshare: ${r.error.message}`
    const said = `${r.stdout}${r.stderr}`.trim()
    if (r.status === 10) assert.fail(`the sandbox is not what it claims to be: ${said}`)
    if (r.status === 11)
      return `user ${USER} cannot read the checkout at ${APP} (or run ${process.execPath}): ${said}`
    if (r.status !== 0)
      return `unshare --pid --fork --mount-proc, mount or setpriv is not permitted here: ${said}`
    return undefined
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
}

/** The host's pids of `pid`'s children. */
function childrenOf(pid: number): number[] {
  const text = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim()
  return text ? text.split(/\s+/).map(Number) : []
}

/** The built CLI as the ENTRYPOINT starts it, in the sandbox, with a DATA_DIR of its own; ended after `t`. */
function startInImage(t: TestContext): Sidecar {
  const dataDir = mkdtempSync(join(tmpdir(), 'sia-container-'))
  chownSync(dataDir, USER, USER)
  const sc = startSidecar({
    dataDir,
    env: { NODE_ENV: 'production' },
    command: (node) => ({
      file: 'unshare',
      args: sandboxed(dataDir, [...ENTRYPOINT_INIT, node, ...ENTRYPOINT]),
      cwd: APP,
    }),
  })
  t.after(() => endSandbox(sc, dataDir))
  return sc
}

/**
 * A failed assertion leaves the sandbox running: SIGKILL to a namespace's PID 1 ends every process
 * in it (SIGKILL to unshare alone would leave them, holding the test's pipes).
 */
async function endSandbox(sc: Sidecar, dataDir: string): Promise<void> {
  if (sc.proc.exitCode === null && sc.proc.signalCode === null) {
    try {
      for (const init of childrenOf(sc.proc.pid!)) process.kill(init, 'SIGKILL')
    } catch {}
    sc.kill('SIGKILL')
    await sc.exited
  }
  rmSync(dataDir, { recursive: true, force: true })
}

/** The host's pid of the sandbox's PID 1: the only child of the unshare process. */
function pid1(sc: Sidecar): number {
  const children = childrenOf(sc.proc.pid!)
  assert.equal(children.length, 1, `unshare has one child: ${children.join(' ')}`)
  return children[0]!
}

/** `Name:\tvalue…` lines of /proc/<pid>/status, as arrays of fields. */
function procStatus(pid: number): Record<string, string[]> {
  const fields: Record<string, string[]> = {}
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const [name, value] = line.split(':\t')
    if (name && value !== undefined) fields[name] = value.trim().split(/\s+/)
  }
  return fields
}

function get(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    request(url, { agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
      .on('error', reject)
      .end()
  })
}

test("the image's build-time boot, which fills the compile cache, runs node with the ENTRYPOINT's flags", () => {
  // V8 files code compiled under other V8 flags (--no-maglev…) apart: a warm-up with other flags
  // would fill a cache that no start of the image reads.
  const dockerfile = readFileSync(new URL('Dockerfile', APP_URL), 'utf8').replaceAll('\\\n', ' ')
  const warmUp = /\snode\s+((?:--[\w-]+\s+)*)dist\/supervisor\/cli\.js\s*>\s*\/tmp\/warm-up\.log/.exec(
    dockerfile,
  )
  assert.ok(warmUp, 'the warm-up boot is in the Dockerfile')
  assert.deepEqual(warmUp[1]!.trim().split(/\s+/), ENTRYPOINT_NODE_FLAGS)
})

test('as in the image: PID 1, unprivileged, read-only but for DATA_DIR; ready, key 0600, SIGTERM exits 0', async (t) => {
  const why = cannotSandbox()
  if (why) return t.skip(why)

  const sc = startInImage(t)

  const boot = await sc.waitForEvent('supervisor.boot', {}, 30_000)
  await sc.waitForEvent('supervisor.ready', {}, 30_000)
  const inner = pid1(sc)
  assert.match(readlinkSync(`/proc/${inner}/exe`), /\/tini$/, 'PID 1 of the namespace is the init')
  const [child, ...others] = childrenOf(inner)
  assert.deepEqual(others, [], 'the init has one child')
  assert.equal(procStatus(child!).NSpid?.at(-1), String(boot.pid), 'the supervisor is that child')
  const status = procStatus(inner)
  assert.deepEqual(status.NSpid, [String(inner), '1'], 'the host pid is PID 1 in the namespace')
  assert.deepEqual(status.Uid, Array(4).fill(String(USER)), 'real, effective, saved and fs uid')
  assert.deepEqual(status.Gid, Array(4).fill(String(USER)))
  assert.equal(await get(`${await sc.url('healthcheck')}/readyz`), 200)

  const key = statSync(join(sc.dataDir, 'key.pem'))
  assert.equal((key.mode & 0o777).toString(8), '600', 'the private key is readable by its owner only')
  assert.deepEqual([key.uid, key.gid], [USER, USER], 'and owned by the user the sidecar runs as')

  // SIGUSR1 opens no inspector (--disable-sigusr1) and ends nothing.
  process.kill(inner, 'SIGUSR1')
  await sleep(300)
  assert.equal(sc.proc.exitCode, null, 'SIGUSR1 ended the sidecar')
  assert.doesNotMatch(sc.stderr(), /Debugger listening/)

  // What the kubelet does: SIGTERM to the container's PID 1, the init, which passes it on.
  // (unshare --fork does not forward it.)
  process.kill(inner, 'SIGTERM')
  const { code, signal } = await sc.exited
  assert.deepEqual({ code, signal }, { code: 0, signal: null }, `stderr: ${sc.stderr()}`)
  const exit = sc.events('supervisor.exit')
  assert.equal(exit.length, 1)
  assert.equal(exit[0]?.code, 0)
  assert.equal(exit[0]?.cause, 'signal')
  assert.deepEqual(sc.junk, [], 'stdout is JSON lines only')
})

test('as in the image: a SIGTERM before node has run a line of ours (a pod deleted as it starts) still ends it, at once', {
  timeout: 60_000,
}, async (t) => {
  const why = cannotSandbox()
  if (why) return t.skip(why)
  const sc = startInImage(t)
  // The moment the container's process is node (exec'd by the init, or as PID 1 itself): its own
  // boot, tens of ms before the CLI's first line installs the signal handlers.
  const nodeStarted = (pid: number) => readlinkSync(`/proc/${pid}/exe`) === process.execPath
  let target: number | undefined
  for (let tries = 0; target === undefined; tries++) {
    assert.ok(tries < 100_000, 'the container never ran node')
    const [init] = childrenOf(sc.proc.pid!)
    if (init !== undefined) {
      try {
        const [child] = childrenOf(init)
        if (nodeStarted(init) || (child !== undefined && nodeStarted(child))) target = init
      } catch {} // it exec'd or forked between two reads
    }
    if (target === undefined) await new Promise((resolve) => setImmediate(resolve))
  }
  process.kill(target, 'SIGTERM')
  // Ended by the signal (143, through the init) or, had its handlers been in place, a clean stop:
  // not lost (as PID 1, node drops a signal it has no handler for, and ran on until SIGKILL).
  const { code } = await sc.exited
  assert.ok(code === 143 || code === 0, `exit ${code}; stderr: ${sc.stderr()}`)
  if (code === 0) assert.equal(sc.events('supervisor.exit').length, 1)
  assert.deepEqual(sc.events('supervisor.ready'), [], 'it did not boot on regardless')
})
