/**
 * The environment variables that carry a secret setting, and their `_FILE` forms (the file's path
 * is no secret, but the value it names is the supervisor's to read). Kept apart from settings.ts,
 * which marks them `secret: true` (config.test checks the two agree), so that the supervisor can
 * spawn its first thread before it loads the settings.
 */
const SECRET_SETTINGS = ['REDIS_URL', 'REDIS_SENTINEL_PASSWORD', 'GATEWAY_AUTH_TOKEN'] as const

export const SECRET_ENV: ReadonlySet<string> = new Set(
  SECRET_SETTINGS.flatMap((name) => [name, `${name}_FILE`]),
)

/**
 * The environment a worker thread is given: the process's as it is now (NODE_COMPILE_CACHE
 * included), less the secrets. A worker reads its configuration from the supervisor, never from
 * the environment, and one handed no secret must not find one in `process.env` (DESIGN.md §8).
 */
export function workerEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(env)) if (!SECRET_ENV.has(k)) out[k] = v
  return out
}
