import { writeFileAtomic } from '../../shared/atomic-file.js'
import type { Config } from '../../shared/config/types.js'
import { codedError } from '../../shared/errors.js'
import { tokenFilePath } from '../../shared/identity/runtime.js'
import type { AccessToken, RoleToken } from '../../shared/identity/tokens.js'
import type { Logger } from '../../shared/logger.js'
import type { Registry } from '../../shared/prom.js'
import { createWatchedSlot } from '../../shared/watched-slot.js'
import { type CacheKey, describeKey, type TokenCache } from './cache.js'

export interface TokenFiles {
  /**
   * Writes the targets' token files (TOKEN_DIR or the naming formats) from the caches, 0600; true
   * once they are on disk. False, and said, when a write failed, or at once while an earlier write
   * still runs (one the boot stopped waiting for; a frozen volume: the slot says it is stuck, the
   * gauge how long). Stops waiting when `signal` aborts (the boot's deadline, the shutdown).
   */
  write(signal: AbortSignal): Promise<boolean>
}

export function createTokenFiles(opts: {
  config: Config
  caches: { roleTokens?: TokenCache<RoleToken>; accessTokens?: TokenCache<AccessToken> }
  targets: { roletoken: CacheKey[]; accesstoken: CacheKey[] }
  log: Logger
  registry: Registry
  /** The service's own: once it aborts, an abandoned write is no failure to report. */
  stopping: AbortSignal
  /** Before each write of the files (the failpoint `token.before-write`). */
  beforeWrite: () => Promise<void>
}): TokenFiles {
  const { config, caches, targets, log } = opts
  const roleIds = new Set(targets.roletoken.map(describeKey))
  const accessIds = new Set(targets.accesstoken.map(describeKey))
  const slot = createWatchedSlot({
    stuckAfterMs: config.services.token.startTimeout,
    log,
    event: 'token.files',
    what: 'a write of the token files',
    gauge: {
      registry: opts.registry,
      name: 'token_files_stuck_seconds',
      help: 'How long the write of the token files in flight has run, once it has outlasted the start deadline (0: none is stuck)',
    },
  })

  /**
   * One file at a time: a volume that hangs holds one thread of libuv's pool, not four (all of them).
   * Every file is tried: one that cannot be written (its directory replaced by a file, a mount gone
   * read-only) left every file after it in the cache's order unwritten, the same ones at each
   * retry, until their tokens expired. The error names each file that failed (paths, no token).
   */
  async function writeAll(): Promise<void> {
    const files: [string, string][] = []
    for (const e of caches.roleTokens?.entries() ?? []) {
      const file = roleIds.has(describeKey(e.key)) && tokenFilePath(config, e.key, 'roletoken')
      if (file) files.push([file, e.value.token])
    }
    for (const e of caches.accessTokens?.entries() ?? []) {
      const file = accessIds.has(describeKey(e.key)) && tokenFilePath(config, e.key, 'accesstoken')
      if (file) files.push([file, e.value.access_token])
    }
    if (files.length === 0) return
    await opts.beforeWrite()
    const failed: { file: string; err: unknown }[] = []
    for (const [file, token] of files)
      await writeFileAtomic(file, token, 0o600).catch((err: unknown) => failed.push({ file, err }))
    if (failed.length > 0) {
      const why = failed.map((f) => `${f.file} (${f.err instanceof Error ? f.err.message : String(f.err)})`)
      throw codedError(
        'ERR_TOKEN_FILES',
        `${failed.length} of ${files.length} token file(s) not written: ${why.join('; ')}`,
      )
    }
  }

  /** Writes that failed (or found one still hanging) since the files were last written. */
  let failures = 0
  return {
    async write(signal) {
      // No time left to wait for it (a start at its deadline): owed, written by the first retry.
      if (signal.aborted) return false
      try {
        // Not written beside it (its late rename would land over the newer file), nor dropped
        // unsaid: a write owed, retried as any that failed.
        if (slot.busy())
          throw codedError('ERR_TOKEN_FILES_BUSY', 'an earlier write of the token files has not ended')
        await slot.run(writeAll, signal)
      } catch (err) {
        failures++
        if (!opts.stopping.aborted)
          log.error({ event: 'token.files.failed', err }, 'writing token files failed')
        return false
      }
      if (failures > 0)
        log.info(
          { event: 'token.files.recovered', failures },
          `token files written after ${failures} failure(s)`,
        )
      failures = 0
      return true
    },
  }
}
