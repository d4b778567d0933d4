import { createServer } from 'node:http'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { Redis } from 'ioredis'

/**
 * The references the bench compares against: the least a Node server can do for the same answer,
 * in a worker thread like the services themselves.
 * - `json`: answers every request with a fixed JSON body (token server reference);
 * - `redis`: one ioredis SET NX PX per request, 201 or 202 (gateway reference).
 */
export interface BareOptions {
  kind: 'json' | 'redis'
  body?: string
  headers?: Record<string, string>
  redisUrl?: string
}

export interface BareServer {
  url: string
  close(): Promise<void>
}

export function startBareServer(opts: BareOptions): Promise<BareServer> {
  const worker = new Worker(new URL(import.meta.url), { workerData: opts })
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

if (!isMainThread) {
  const opts = workerData as BareOptions
  const redis = opts.kind === 'redis' ? new Redis(opts.redisUrl!) : undefined
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (!redis) {
        res.writeHead(200, { 'content-type': 'application/json', ...opts.headers })
        res.end(opts.body)
        return
      }
      const key = `bare:${JSON.parse(Buffer.concat(chunks).toString()).alerts[0].fingerprint}`
      redis.set(key, '1', 'PX', 300_000, 'NX').then(
        (r) => {
          res.writeHead(r === 'OK' ? 201 : 202, { 'content-type': 'application/json' })
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
