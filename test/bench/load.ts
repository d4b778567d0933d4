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

export interface Compared {
  it: LoadResult
  ref: LoadResult
  /** Median of the rounds' ratios of req/s, ours over the reference's. */
  ratio: number
  /** Median of the rounds' ratios of p99. */
  p99Ratio: number
  /**
   * With `cpu` samplers that read a clock: the median run's CPU per request (µs) of ours and of
   * the reference.
   */
  cpuPerRequest?: { it: number; ref: number }
}

/** Reads a CPU clock (ms) of ours and of the reference, sampled around each of their runs. */
export interface CpuSamplers {
  it(): number
  ref(): number
}

/**
 * Ours against the reference in `rounds` pairs run back to back, in the order ABBA…: the VM's
 * speed drifts (up to 2× between runs), and a ratio of two runs seconds apart, taken as the median
 * over the pairs, is what drift leaves alone. Each run lasts `durationSec / 2`.
 */
export async function compareLoad(
  job: LoadJob,
  refUrl: string,
  rounds = 3,
  cpu?: CpuSamplers,
): Promise<Compared> {
  const part = { ...job, durationSec: Math.max(2, Math.round(job.durationSec / 2)) }
  const its: LoadResult[] = []
  const refs: LoadResult[] = []
  const itCpu: number[] = []
  const refCpu: number[] = []
  // CPU per request is steadier than requests a second on a VM whose speed drifts: a slower
  // moment stretches the run, not what each request costs.
  const run = async (target: string, clock: (() => number) | undefined, costs: number[]) => {
    const before = clock?.()
    const r = await runLoad({ ...part, url: target })
    const cost = clock && before !== undefined ? ((clock() - before) * 1000) / r.total : Number.NaN
    if (Number.isFinite(cost)) costs.push(cost) // no such thread (NaN), or no request answered
    return r
  }
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 === 0 ? ['it', 'ref'] : ['ref', 'it']
    for (const which of order) {
      if (which === 'it') its.push(await run(job.url, cpu?.it, itCpu))
      else refs.push(await run(refUrl, cpu?.ref, refCpu))
    }
  }
  const ratios = its.map((r, i) => r.reqPerSec / refs[i]!.reqPerSec)
  const p99Ratios = its.map((r, i) => r.p99Ms / Math.max(refs[i]!.p99Ms, 1))
  const cpuPerRequest = itCpu.length && refCpu.length ? { it: middle(itCpu), ref: middle(refCpu) } : undefined
  return {
    it: merged(its),
    ref: merged(refs),
    ratio: middle(ratios),
    p99Ratio: middle(p99Ratios),
    ...(cpuPerRequest && { cpuPerRequest }),
  }
}

const middle = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** The runs as one: requests over time, the median run's latencies, every failure. */
function merged(runs: LoadResult[]): LoadResult {
  return {
    reqPerSec: runs.reduce((s, r) => s + r.reqPerSec, 0) / runs.length,
    p50Ms: middle(runs.map((r) => r.p50Ms)),
    p99Ms: middle(runs.map((r) => r.p99Ms)),
    total: runs.reduce((s, r) => s + r.total, 0),
    non2xx: runs.reduce((s, r) => s + r.non2xx, 0),
    errors: runs.reduce((s, r) => s + r.errors, 0),
  }
}
