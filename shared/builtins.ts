/**
 * Node built-ins taken as CommonJS objects (`process.getBuiltinModule`), not imported as ES
 * modules. An `import … from 'node:http'` builds a facade that reads every export once, and
 * getters that were meant to stay lazy then run in every thread that imports it: http's
 * `WebSocket`, `MessageEvent` and `CloseEvent` load undici (~30 ms of CPU and its heap), fs's
 * `ReadStream` and `promises` load the stream and readline modules (~3 ms). Seven threads load
 * their modules at once on few cores at boot. Types still come from `import type … from 'node:…'`.
 * `node:http` is in `http-builtin.ts`, for the threads that serve.
 */
export const {
  accessSync,
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  unwatchFile,
  watchFile,
  writeSync,
} = process.getBuiltinModule('node:fs')

/**
 * `node:https`, loaded where it is first used: https and tls are ~10 ms of CPU and their heap in
 * each thread, and only the ZTS, Kubernetes and TLS token server paths need them.
 */
export const https = () => process.getBuiltinModule('node:https')
