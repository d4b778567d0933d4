/**
 * Imported for its side effect only, as the first import of the CLI: turns on Node's on-disk code
 * cache (`module.enableCompileCache()`, Node 22.1+), so that a start after the first one skips
 * compiling the modules it loads. Booting is bound by module loading: seven threads load theirs at
 * once on few cores.
 *
 * The cache directory is Node's choice: `NODE_COMPILE_CACHE` when set, else `node-compile-cache`
 * under the temporary directory. The call enables it for this thread only, and only for modules
 * compiled after it (the CommonJS dependencies, and what is imported later). Workers are the larger
 * share: each creates its own module loader, which reads `NODE_COMPILE_CACHE` from the environment
 * the worker is given, a copy of `process.env` taken when it is spawned. Setting it here therefore
 * gives every worker the cache from its first module on.
 *
 * It never fails the boot: where the directory cannot be written (a read-only root file system,
 * another user's directory) Node reports the failure and compiles as before. `NODE_DISABLE_COMPILE_CACHE=1`
 * turns it off.
 */
import module from 'node:module'

if (typeof module.enableCompileCache === 'function') {
  try {
    const { status, directory } = module.enableCompileCache()
    const { ENABLED, ALREADY_ENABLED } = module.constants.compileCacheStatus
    if ((status === ENABLED || status === ALREADY_ENABLED) && directory)
      process.env.NODE_COMPILE_CACHE = directory
  } catch {
    // A cache is an optimisation: whatever goes wrong, boot without one.
  }
}
