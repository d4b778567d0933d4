import { mkdir, open } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Sink, SinkRecord } from './sink.js'

/**
 * JSON lines appended to one file. Writes are serialised (a batch's lines stay together) and each
 * is fdatasync'ed before `write` resolves, so a 2xx means the alert is on disk.
 */
export async function createFileSink(path: string): Promise<Sink> {
  await mkdir(dirname(path), { recursive: true })
  const file = await open(path, 'a', 0o640)
  let tail: Promise<void> = Promise.resolve()

  const append = async (buf: Buffer) => {
    let offset = 0
    while (offset < buf.length) offset += (await file.write(buf, offset)).bytesWritten
    await file.datasync()
  }

  return {
    name: 'file',
    write(records: readonly SinkRecord[]) {
      const buf = Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join(''))
      const job = tail.then(() => append(buf))
      tail = job.catch(() => {})
      return job
    },
    async close() {
      await tail
      await file.close()
    },
  }
}
