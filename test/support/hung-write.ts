import { readlinkSync } from 'node:fs'
import { isMainThread } from 'node:worker_threads'

/**
 * Preloaded into a sidecar under test (NODE_OPTIONS=--import): on the main thread, a write to the
 * file HUNG_WRITE never returns, as on a hung volume (a hard-mounted NFS server gone). An
 * asynchronous write's thread of libuv's pool blocks in open() of the FIFO HUNG_WRITE_FIFO, which
 * nobody opens for writing, and its callback never comes; a synchronous one blocks the main thread
 * there. A wait the kernel ends when the process goes, as a hung NFS write's (strace's hold of a
 * system call is not: the process outlives even a SIGKILL then). With HUNG_WRITE_FROM=<signal>,
 * the volume hangs only from that signal on (the writes of the exit's own lines are the first to).
 */
const path = process.env.HUNG_WRITE
const fifo = process.env.HUNG_WRITE_FIFO
const from = process.env.HUNG_WRITE_FROM as NodeJS.Signals | undefined
if (isMainThread && path && fifo) {
  let hung = !from
  // Registered before the sidecar's own listener, so its first line about the signal hangs too.
  if (from)
    process.on(from, () => {
      hung = true
    })
  const hangs = (fd: number) => hung && readlinkSync(`/proc/self/fd/${fd}`) === path
  const fs = process.getBuiltinModule('node:fs')
  const { write, writeSync } = fs
  fs.write = ((fd: number, ...rest: unknown[]) => {
    if (!hangs(fd)) return Reflect.apply(write, fs, [fd, ...rest])
    fs.open(fifo, 'r', () => {})
  }) as typeof fs.write
  fs.writeSync = ((fd: number, ...rest: unknown[]) => {
    if (!hangs(fd)) return Reflect.apply(writeSync, fs, [fd, ...rest])
    fs.openSync(fifo, 'r')
    return 0
  }) as typeof fs.writeSync
}
