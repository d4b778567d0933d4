import { existsSync, openSync, writeFileSync } from 'node:fs'
import { Server } from 'node:net'
import { threadName } from 'node:worker_threads'

/**
 * Preloaded into every thread of a sidecar under test (NODE_OPTIONS=--import): in the thread named
 * WEDGE_THREAD, the first server close of the process blocks in open() on the FIFO WEDGE_FIFO,
 * which nobody opens for writing. A thread blocked in a system call cannot be terminated: the
 * fault of a drain stuck in native code (a frozen file system, a hung NFS mount).
 */
const fifo = process.env.WEDGE_FIFO
if (fifo && threadName === process.env.WEDGE_THREAD) {
  const close = Server.prototype.close
  Server.prototype.close = function wedged(this: Server, ...args: Parameters<Server['close']>) {
    const once = `${fifo}.once`
    if (!existsSync(once)) {
      writeFileSync(once, '')
      openSync(fifo, 'r')
    }
    return close.apply(this, args)
  }
}
