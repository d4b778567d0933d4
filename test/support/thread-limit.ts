import { execFileSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { isMainThread } from 'node:worker_threads'

/**
 * Preloaded into a sidecar under test (NODE_OPTIONS=--import) that runs as a user of its own: from
 * before the CLI's first line, the process may make no thread beyond those it has (RLIMIT_NPROC
 * counts that user's threads), so every worker thread it asks for fails as at a pod's pids limit
 * (`new Worker()` throws ERR_WORKER_INIT_FAILED, EAGAIN). libuv's pool is made first: a pool that
 * cannot make its threads aborts the process, which is not the fault under test.
 */
if (isMainThread) {
  await stat('/')
  const threads = readdirSync('/proc/self/task').length
  execFileSync('prlimit', [`--pid=${process.pid}`, `--nproc=${threads}`])
}
