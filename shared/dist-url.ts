/**
 * The URL of a file of dist/ (`shared/identity/csr-task.js`), for code that loads it by path. Such
 * code runs from its own file under dist/ or inlined in a bundle elsewhere under dist/ (a worker's,
 * the supervisor's: scripts/bundle.mjs), where a path relative to import.meta.url would be wrong;
 * so the path starts from the dist/ folder it runs in.
 */
export function distUrl(path: string, here: string = import.meta.url): URL {
  const dist = here.lastIndexOf('/dist/')
  if (dist < 0) throw new Error(`not running from a dist/ folder: ${here}`)
  return new URL(path, here.slice(0, dist + 6))
}

/**
 * Requires a CommonJS bundle of dist/ by its path (`workers/gateway/redis-client.cjs`): code a
 * thread needs rarely, kept out of its own bundle and loaded when first used. `node:module` and
 * `node:url` are taken then too, not by every thread at boot.
 */
export function requireFromDist<T>(path: string): T {
  const { createRequire } = process.getBuiltinModule('node:module')
  const { fileURLToPath } = process.getBuiltinModule('node:url')
  const file = fileURLToPath(distUrl(path))
  return createRequire(file)(file) as T
}
