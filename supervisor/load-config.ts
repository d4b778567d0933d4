import { createRequire } from 'node:module'
import type { Invocation, loadConfig } from '../shared/config/load.js'

/**
 * `loadConfig` (shared/config/load.ts) on this thread, from its own bundle (`loader.cjs`, made by
 * scripts/bundle.mjs), required for the call and dropped after it: the supervisor keeps the
 * validated configuration, not the schema code that produced it, and no thread is started for it
 * (a configuration thread cost ~40 ms of boot and ~90 ms of CPU on the critical path, measured).
 * A CommonJS module can leave the module cache, an ES module cannot. Throws the loader's error
 * (ERR_CONFIG naming the setting).
 */
export function loadConfigOnce(argv: readonly string[], env: NodeJS.ProcessEnv): Invocation {
  // A require of its own: the module it loads is also listed among its parent's children.
  const require = createRequire(import.meta.url)
  const file = require.resolve('../shared/config/loader.cjs')
  try {
    const loader = require(file) as { loadConfig: typeof loadConfig }
    return loader.loadConfig(argv, env)
  } finally {
    delete require.cache[file]
    // zod keeps its configuration (the message locale) and its schema registry on globalThis
    // (zod/v4/core), where they would hold the whole bundle, ~0.5 MiB of heap, for the run. No
    // other code on this thread uses zod; the next load sets them again.
    const zodGlobals = globalThis as { __zod_globalConfig?: unknown; __zod_globalRegistry?: unknown }
    delete zodGlobals.__zod_globalConfig
    delete zodGlobals.__zod_globalRegistry
  }
}
