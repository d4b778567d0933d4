import { accessSync, constants } from '../shared/builtins.js'

// The global exists in every Node; this project's `lib` (no DOM) does not declare it.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object, imports: object) => object
}

/**
 * Ends the process with `code` without waiting for its other threads: every exit of a run
 * (exit.ts) and of init mode, either of which may leave a thread that could not be terminated or
 * a file operation stuck in libuv's thread pool (a hung volume). `process.exit()` joins every
 * worker thread and that pool, so one stuck in native code would hold the process forever.
 *
 * The process image is replaced (execve) by a Node that only exits with `code`: the kernel ends
 * every other thread at once, the PID and the exit code are the ones the container runtime
 * waits for, and nothing of this process runs after. Calling the C library's `exit()` instead
 * (WASI's proc_exit) is only the fallback, should execve fail: it joins libuv's thread pool (a
 * request that never returns holds it forever) and runs static destructors while threads that
 * are merely slow to end still tear down their isolates (Node 22 crashed there with SIGSEGV and
 * SIGABRT, in BroadcastChannel's sibling groups).
 */
export function hardExit(code: number, execPath = process.execPath): never {
  // What process.exit() runs first, the 'exit' listeners (the LOG_DIR file's last lines,
  // supervisor.exit among them), runs here too: nothing of this process runs after execve.
  process.exitCode = code
  try {
    process.emit('exit', code)
  } catch {}
  // Its experimental warning is emitted later, by a process that no longer exists; WASI's
  // would reach stderr at once.
  process.removeAllListeners('warning')
  try {
    // Node 22 aborts the process when execve fails rather than throw: the likely failure (the
    // binary is gone) is looked for first. Node before 22.15 has no execve.
    accessSync(execPath, constants.X_OK)
    // An empty environment: no NODE_OPTIONS (a preload, an inspector) runs in the stand-in.
    process.execve?.(execPath, [execPath, '-e', `process.exitCode = ${code & 0xff}`], {})
  } catch {}
  procExit(code)
  process.exit(code) // not reached
}

/** The C library's exit(), through WASI's proc_exit with `returnOnExit: false`. */
function procExit(code: number): void {
  // (module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
  //         (memory (export "memory") 1)
  //         (func (export "_start") (call 0 (i32.const <code>))))
  const name = (s: string) => [s.length, ...Buffer.from(s)]
  const bytes = new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...[0x01, 0x08, 0x02, 0x60, 0x01, 0x7f, 0x00, 0x60, 0x00, 0x00],
    ...[0x02, 0x24, 0x01, ...name('wasi_snapshot_preview1'), ...name('proc_exit'), 0x00, 0x00],
    ...[0x03, 0x02, 0x01, 0x01],
    ...[0x05, 0x03, 0x01, 0x00, 0x01],
    ...[0x07, 0x13, 0x02, ...name('memory'), 0x02, 0x00, ...name('_start'), 0x00, 0x01],
    ...[0x0a, 0x08, 0x01, 0x06, 0x00, 0x41, code & 0x3f, 0x10, 0x00, 0x0b],
  ])
  const { WASI } = process.getBuiltinModule('node:wasi')
  const wasi = new WASI({ version: 'preview1', returnOnExit: false })
  wasi.start(new WebAssembly.Instance(new WebAssembly.Module(bytes), wasi.getImportObject()))
}
