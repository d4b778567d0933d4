import { fork } from 'node:child_process'
import type { LoadJob, LoadResult } from './load-process.js'

const SCRIPT = new URL('./load-process.js', import.meta.url)

/** Runs one autocannon job in a child process; bounded by the job's duration plus a margin. */
export function runLoad(job: LoadJob): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = fork(SCRIPT, { stdio: 'inherit' })
    const timer = setTimeout(() => child.kill('SIGKILL'), (job.durationSec + 30) * 1000)
    child.once('message', (r: LoadResult) => {
      clearTimeout(timer)
      resolve(r)
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`load generator exited with ${code} before answering`))
    })
    child.send(job)
  })
}
