import { open } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ensureDir } from '../../shared/ensure-dir.js'
import type { Sink, SinkRecord } from './sink.js'

interface Waiter {
  buf: Buffer
  resolve(): void
  reject(err: unknown): void
}

/**
 * JSON lines appended to one file; `write` resolves only once its lines are fdatasync'ed, so a 2xx
 * means the alert is on disk. Group commit: requests that arrive while a sync is in flight are
 * written together and share the next sync, so the cost of durability is paid once per burst, not
 * once per request. A batch's lines stay together.
 */
export async function createFileSink(path: string): Promise<Sink> {
  await ensureDir(dirname(path))
  const file = await open(path, 'a', 0o640)
  let queue: Waiter[] = []
  let flushing: Promise<void> | undefined

  const append = async (buf: Buffer) => {
    let offset = 0
    while (offset < buf.length) offset += (await file.write(buf, offset)).bytesWritten
    await file.datasync()
  }

  const flush = async () => {
    while (queue.length > 0) {
      const group = queue
      queue = []
      try {
        await append(Buffer.concat(group.map((w) => w.buf)))
        for (const w of group) w.resolve()
      } catch (err) {
        for (const w of group) w.reject(err)
      }
    }
    flushing = undefined
  }

  return {
    name: 'file',
    write(records: readonly SinkRecord[]) {
      const buf = Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join(''))
      return new Promise<void>((resolve, reject) => {
        queue.push({ buf, resolve, reject })
        flushing ??= flush()
      })
    },
    async close() {
      await flushing
      await file.close()
    },
  }
}
