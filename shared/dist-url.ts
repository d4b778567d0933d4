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
