import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { test } from 'node:test'
import { type Sidecar, startReady, stop } from './support/sidecar.js'

/**
 * Connections that hold memory and never finish their request: each worker's heap bounds how many
 * a server holds (shared/http/connection-cap.ts), and past that the oldest one running no handler
 * is closed for the new one. Before, a few hundred slow clients with large headers ended the
 * health check's thread out of heap, a few floods the sidecar (crash loop), and two thousand
 * half-sent token requests the token thread.
 */

/** `n` connections to `port`, each sending `head` in `parts` writes and never the rest. */
async function flood(port: number, n: number, head: string, parts: number): Promise<Socket[]> {
  const sockets: Socket[] = []
  const size = Math.ceil(head.length / parts)
  await Promise.all(
    Array.from({ length: n }, async () => {
      const s = connect({ port, host: '127.0.0.1' })
      sockets.push(s)
      s.on('error', () => {})
      await new Promise((r) => s.once('connect', r).once('close', r))
      for (let i = 0; i < head.length && !s.destroyed; i += size) {
        await new Promise<void>((r) => s.write(head.slice(i, i + size), () => r()))
        await new Promise((r) => setTimeout(r, 2)) // apart: a chunk each, as a slow client's
      }
    }),
  )
  return sockets
}

const portOf = (url: string) => Number(new URL(url).port)

async function withSidecar(run: (sc: Sidecar) => Promise<void>): Promise<void> {
  // As many connections as descriptors allow: the heap is the bound under test.
  const sc = await startReady({
    env: { HTTP_MAX_CONNECTIONS: '4096', HTTP_HEADER_TIMEOUT: '60s', HTTP_REQUEST_TIMEOUT: '60s' },
  })
  try {
    await run(sc)
  } catch (err) {
    await stop(sc, 'SIGKILL')
    throw err
  }
  assert.equal(await stop(sc), 0)
}

test('2,000 connections trickling in 15 KB of headers: the health check lives, a probe is answered, the oldest are closed', async () => {
  await withSidecar(async (sc) => {
    const listening = await sc.waitForEvent('server.listening', { service: 'healthcheck' })
    assert.ok((listening.maxConnections as number) < 2000, 'its heap holds fewer than 2,000 such connections')
    const base = await sc.url('healthcheck')
    const line = (i: number) => `x-pad-${i}: ${'v'.repeat(150)}\r\n`
    const head = `GET /readyz HTTP/1.1\r\nhost: x\r\n${Array.from({ length: 95 }, (_, i) => line(i)).join('')}`
    const sockets = await flood(portOf(base), 2000, head, 4)
    try {
      assert.equal((await fetch(`${base}/healthz`)).status, 200)
      const full = await sc.waitForEvent('server.connections.full', { service: 'healthcheck' })
      assert.equal(full.maxConnections, listening.maxConnections)
      assert.ok((full.evicted as number) > 0, JSON.stringify(full))
      assert.deepEqual(sc.events('worker.crashed'), [])
    } finally {
      for (const s of sockets) s.destroy()
    }
  })
})

test('a request with more than 100 header lines is 431, its lines not held', async () => {
  await withSidecar(async (sc) => {
    const base = await sc.url('healthcheck')
    const lines = Array.from({ length: 101 }, (_, i) => `x-${i}: v\r\n`).join('')
    const answer = await new Promise<string>((resolve) => {
      const s = connect({ port: portOf(base), host: '127.0.0.1' })
      let text = ''
      s.setEncoding('latin1')
      s.on('data', (d: string) => {
        text += d
      })
      s.on('error', () => {})
      s.on('close', () => resolve(text))
      s.write(`GET /readyz HTTP/1.1\r\nhost: x\r\n${lines}\r\n`)
    })
    assert.match(answer, /^HTTP\/1\.1 431 /)
    assert.equal(JSON.parse(answer.split('\r\n\r\n')[1]!).status, 431)
  })
})

test('2,500 token requests trickling in 60 KB bodies: the token thread lives, a token is answered', async () => {
  await withSidecar(async (sc) => {
    const base = await sc.url('token')
    const head = `POST /accesstoken HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 65536\r\n\r\n{"domain":"${' '.repeat(60_000)}`
    const sockets = await flood(portOf(base), 2500, head, 8)
    try {
      const res = await fetch(`${base}/accesstoken`, {
        method: 'POST',
        body: JSON.stringify({ domain: 'demo', role: 'reader' }),
      })
      assert.equal(res.status, 200, await res.text())
      const full = await sc.waitForEvent('server.connections.full', { service: 'token' })
      assert.ok((full.evicted as number) > 0, JSON.stringify(full))
      assert.deepEqual(sc.events('worker.crashed'), [])
    } finally {
      for (const s of sockets) s.destroy()
    }
  })
})
