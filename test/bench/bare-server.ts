import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'
import { createServer } from 'node:http'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { Redis } from 'ioredis'

/**
 * The references the bench compares against: the least a Node server can do for the same answer,
 * in a worker thread like the services themselves.
 * - `json`: answers every request with a fixed JSON body (token server reference);
 * - `gateway`: what the gateway must do and nothing more: parse the batch, one Redis round trip
 *   for the batch (SET NX PX per alert, pipelined), the new alerts appended to a file with a group
 *   commit (one write and one fdatasync for every batch waiting), then 201 or 202.
 */
export interface BareOptions {
  kind: 'json' | 'gateway'
  body?: string
  headers?: Record<string, string>
  redisUrl?: string
  /** `gateway`: the file the new alerts are appended to. */
  sinkFile?: string
}

export interface BareServer {
  url: string
  close(): Promise<void>
}

/** The name of a reference server's thread, by kind. */
export const BARE_THREAD: Record<BareOptions['kind'], string> = { json: 'bare-json', gateway: 'bare-gateway' }

export function startBareServer(opts: BareOptions): Promise<BareServer> {
  // Named, so the bench can read its thread's CPU (`threadCpuMs(process.pid, BARE_THREAD[kind])`).
  const worker = new Worker(new URL(import.meta.url), { workerData: opts, name: BARE_THREAD[opts.kind] })
  return new Promise((resolve, reject) => {
    worker.once('error', reject)
    worker.once('message', (port: number) =>
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: async () => void (await worker.terminate()),
      }),
    )
  })
}

interface BareAlert {
  fingerprint?: string
  labels: Record<string, string>
}

/** Appends with a group commit: whatever is queued while a write+fdatasync runs goes in the next. */
async function groupCommitter(path: string): Promise<(data: string) => Promise<void>> {
  const file = await open(path, 'a')
  let queue: { data: string; done: () => void }[] = []
  let flushing = false
  const flush = async () => {
    flushing = true
    while (queue.length > 0) {
      const batch = queue
      queue = []
      await file.write(batch.map((b) => b.data).join(''))
      await file.datasync()
      for (const b of batch) b.done()
    }
    flushing = false
  }
  return (data) =>
    new Promise((resolve) => {
      queue.push({ data, done: resolve })
      if (!flushing) void flush()
    })
}

if (!isMainThread) {
  const opts = workerData as BareOptions
  const redis = opts.kind === 'gateway' ? new Redis(opts.redisUrl!) : undefined
  const append = opts.kind === 'gateway' ? await groupCommitter(opts.sinkFile!) : undefined
  const ingest = async (body: Buffer): Promise<number> => {
    const alerts = (JSON.parse(body.toString()) as { alerts: BareAlert[] }).alerts
    const keys = alerts.map(
      (a) =>
        a.fingerprint ??
        createHash('sha256')
          .update(JSON.stringify(Object.entries(a.labels).sort()))
          .digest('hex'),
    )
    const pipeline = redis!.pipeline()
    for (const k of keys) pipeline.set(`bare:${k}`, '1', 'PX', 300_000, 'NX')
    const replies = (await pipeline.exec()) ?? []
    const fresh = alerts.filter((_, i) => replies[i]?.[1] === 'OK')
    if (fresh.length === 0) return 202
    await append!(fresh.map((a) => `${JSON.stringify(a)}\n`).join(''))
    return 201
  }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (!redis) {
        res.writeHead(200, { 'content-type': 'application/json', ...opts.headers })
        res.end(opts.body)
        return
      }
      ingest(Buffer.concat(chunks)).then(
        (status) => {
          res.writeHead(status, { 'content-type': 'application/json' })
          res.end('{"created":1}')
        },
        () => {
          res.writeHead(503)
          res.end()
        },
      )
    })
  })
  server.keepAliveTimeout = 10_000
  server.listen(0, '127.0.0.1', () => parentPort!.postMessage((server.address() as { port: number }).port))
}
