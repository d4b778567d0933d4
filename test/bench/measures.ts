import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { MessageChannel, Worker } from 'node:worker_threads'
import { IMAGE_NODE_FLAGS } from '../support/image.js'

/** Small measuring tools shared by the bench's figures. */

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : Number.NaN
}

/**
 * CPU time (ms) the threads of process `pid` named `name` have run, from the kernel's scheduler
 * statistics (nanoseconds, `/proc/<pid>/task/<tid>/schedstat`); NaN when no thread has that name.
 * Node 26 names a worker's thread after its `name` option (15 characters at most); on Node 20 and
 * 22 they are all `node`, and no figure that reads this is reported.
 */
export function threadCpuMs(pid: number, name: string): number {
  let ns = 0
  let found = false
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== name) continue
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0])
      found = true
    } catch {} // the thread ended between the listing and the read
  }
  return found ? ns / 1e6 : Number.NaN
}

/** Polls `url` until it answers 200; resolves with the time that took from `t0`. */
export async function untilOk(url: string, t0: number, timeoutMs = 30_000): Promise<number> {
  for (;;) {
    try {
      const res = await fetch(url)
      await res.arrayBuffer()
      if (res.status === 200) return performance.now() - t0
    } catch {}
    if (performance.now() - t0 > timeoutMs) throw new Error(`${url} not ready after ${timeoutMs}ms`)
    await sleep(5)
  }
}

const EMPTY_WORKERS = (n: number) => `
const { Worker } = require('node:worker_threads')
let ready = 0
if (${n} === 0) console.log('ready')
for (let i = 0; i < ${n}; i++) {
  const w = new Worker("require('node:worker_threads').parentPort.postMessage(1); setInterval(() => {}, 1 << 30)", { eval: true })
  w.once('message', () => { if (++ready === ${n}) console.log('ready') })
}
setInterval(() => {}, 1 << 30)
`

/** The reference process: `node -e` that only starts `n` empty workers (six) and stays idle. */
export function startSixWorkers(n = 6): Promise<{ pid: number; ms: number; stop(): void }> {
  const t0 = performance.now()
  // With the image's node flags, as the sidecar it is compared with.
  const child = spawn(process.execPath, [...IMAGE_NODE_FLAGS, '-e', EMPTY_WORKERS(n)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  return new Promise((resolve, reject) => {
    child.stdout.once('data', () =>
      resolve({ pid: child.pid!, ms: performance.now() - t0, stop: () => void child.kill('SIGKILL') }),
    )
    child.once('error', reject)
  })
}

/** Median and p99 of `n` sequential round trips through a bare MessagePort echo in a worker. */
export async function bareEchoRoundTrips(n: number): Promise<number[]> {
  const { port1, port2 } = new MessageChannel()
  const worker = new Worker(
    "require('node:worker_threads').workerData.port.on('message', function (m) { this.postMessage(m) })",
    { eval: true, workerData: { port: port2 }, transferList: [port2] },
  )
  const times: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    await new Promise<void>((resolve) => {
      port1.once('message', () => resolve())
      port1.postMessage({ k: 'req', id: i, op: 'ping', args: null })
    })
    times.push(performance.now() - t0)
  }
  port1.close()
  await worker.terminate()
  return times
}

/** One figure of the bench, as results.json holds it. */
export interface Row {
  figure: string
  value: string
  reference: string
  ratio?: number
  target: string
  pass?: boolean
}

/** Sequential scrapes of /metrics: their latencies (ms) and the last exposition. */
export async function scrapes(url: string, n: number): Promise<{ times: number[]; text: string }> {
  const times: number[] = []
  let text = ''
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    text = await (await fetch(url)).text()
    times.push(performance.now() - t0)
  }
  return { times, text }
}
