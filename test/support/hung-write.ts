import { readlinkSync } from 'node:fs'
import { isMainThread } from 'node:worker_threads'

/**
 * Preloaded into a sidecar under test (NODE_OPTIONS=--import): on the main thread, a write to the
 * file HUNG_WRITE never returns, as on a hung volume (a hard-mounted NFS server gone). Its thread
 * of libuv's pool blocks in open() of the FIFO HUNG_WRITE_FIFO, which nobody opens for writing,
 * and the write's callback never comes. A wait the kernel ends when the process goes, as a hung
 * NFS write's (strace's hold of a system call is not: the process outlives even a SIGKILL then).
 */
const path = process.env.HUNG_WRITE
const fifo = process.env.HUNG_WRITE_FIFO
if (isMainThread && path && fifo) {
  const fs = process.getBuiltinModule('node:fs')
  const write = fs.write
  fs.write = ((fd: number, ...rest: unknown[]) => {
    if (readlinkSync(`/proc/self/fd/${fd}`) !== path) return Reflect.apply(write, fs, [fd, ...rest])
    fs.open(fifo, 'r', () => {})
  }) as typeof fs.write
}
