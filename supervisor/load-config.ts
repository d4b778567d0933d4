import { Worker } from 'node:worker_threads'
import type { Invocation } from '../shared/config/load.js'
import { codedError } from '../shared/errors.js'

type Answer = { ok: true; invocation: Invocation } | { ok: false; message: string; code?: string }

/**
 * `loadConfig` on a short-lived thread (shared/config/load-worker.ts): the supervisor keeps the
 * validated configuration, not the ~20 MiB of schema and YAML code that produced it. Rejects
 * with the loader's error (ERR_CONFIG naming the setting), as a direct call would throw it.
 */
export function loadConfigOffThread(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<Invocation> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('../shared/config/load-worker.js', import.meta.url), {
      name: 'config',
      workerData: { argv: [...argv], env: { ...env } },
    })
    let answer: Answer | undefined
    worker.once('message', (a: Answer) => {
      answer = a
    })
    worker.once('error', reject)
    worker.once('exit', (exitCode) => {
      if (!answer)
        return reject(codedError('ERR_CONFIG_LOADER', `the configuration loader exited with ${exitCode}`))
      if (answer.ok) return resolve(answer.invocation)
      reject(Object.assign(new Error(answer.message), answer.code ? { code: answer.code } : {}))
    })
  })
}
