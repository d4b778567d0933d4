import { parentPort, workerData } from 'node:worker_threads'
import { loadConfig } from './load.js'

/**
 * Loads the configuration on a thread of its own, which ends right after (supervisor/
 * load-config.ts): the schema and YAML libraries it needs are then never resident in the
 * supervisor's heap, which lives as long as the pod.
 */
const { argv, env } = workerData as { argv: string[]; env: NodeJS.ProcessEnv }
try {
  parentPort?.postMessage({ ok: true, invocation: loadConfig(argv, env) })
} catch (err) {
  const { message, code } = err as Error & { code?: string }
  parentPort?.postMessage({ ok: false, message, code })
}
