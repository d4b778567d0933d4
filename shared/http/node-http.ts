/**
 * `node:http` without its ES module facade. An `import … from 'node:http'` builds a facade that
 * reads every export once, and http's `WebSocket`, `MessageEvent` and `CloseEvent` getters then
 * load undici: ~30 ms of CPU and its heap in every thread that does it, four of seven here, all at
 * boot on two cores. `process.getBuiltinModule` returns the same module as `require` does, with
 * those getters left lazy. Types still come from `import type … from 'node:http'`.
 */
export const { createServer } = process.getBuiltinModule('node:http')

/**
 * `node:https`, loaded where it is first used: https and tls are ~10 ms of CPU and their heap in
 * each thread, and only the ZTS, Kubernetes and TLS token server paths need them.
 */
export const https = () => process.getBuiltinModule('node:https')
