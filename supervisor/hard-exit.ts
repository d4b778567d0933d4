// The global exists in every Node; this project's `lib` (no DOM) does not declare it.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object, imports: object) => object
}

/**
 * Ends the process with `code` without waiting for worker threads. `process.exit()` joins every
 * thread, so a thread stuck in native code (a threadpool request that never returns) would hold
 * the process forever. WASI's `proc_exit` with `returnOnExit: false` calls the C library's
 * `exit()` directly. Used only when a thread could not be terminated.
 */
export function hardExit(code: number): never {
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
  // WASI is still "experimental": loaded only here, its warning kept off stderr.
  process.removeAllListeners('warning')
  const { WASI } = process.getBuiltinModule('node:wasi')
  const wasi = new WASI({ version: 'preview1', returnOnExit: false })
  wasi.start(new WebAssembly.Instance(new WebAssembly.Module(bytes), wasi.getImportObject()))
  process.exit(code) // not reached
}
