import assert from 'node:assert/strict'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { test } from 'node:test'
import { holdPort } from '../supervisor/port-hold.js'
import { freePort } from './support/ports.js'

/** The supervisor's stand-in on a dead worker's port (DESIGN.md §8), over real sockets. */

function serve(port: number, reply: (data: string) => string): Promise<Server> {
  const server = createServer((s) => s.on('data', (d) => s.end(reply(String(d)))))
  return new Promise((resolve) =>
    server.listen({ host: '127.0.0.1', port, reusePort: true }, () => resolve(server)),
  )
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

/** Connects and sends `text`; settles with what comes back, or the error that ends it. */
function ask(port: number, text: string): { connected: Promise<void>; answer: Promise<string> } {
  const socket: Socket = connect({ host: '127.0.0.1', port })
  let got = ''
  const connected = new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve())
    socket.once('error', reject)
  })
  const answer = new Promise<string>((resolve) => {
    socket.on('data', (d) => {
      got += d
    })
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(`error:${err.code}`))
    socket.once('end', () => resolve(got))
  })
  socket.write(text)
  return { connected, answer }
}

test('connections made while the port is held reach the successor, byte for byte', async () => {
  const port = await freePort()
  const dead = await serve(port, () => 'dead')
  const hold = await holdPort(`127.0.0.1:${port}`)
  await close(dead)
  const asks = Array.from({ length: 5 }, (_, i) => ask(port, `ping${i}`))
  await Promise.all(asks.map((a) => a.connected))
  // Parked, unread: nothing answers until the successor serves.
  while (hold.held() < 5) await new Promise((r) => setImmediate(r))
  const successor = await serve(port, (d) => `successor:${d}`)
  hold.release()
  assert.deepEqual(
    await Promise.all(asks.map((a) => a.answer)),
    asks.map((_, i) => `successor:ping${i}`),
  )
  // The hold no longer listens: new connections go to the successor alone.
  assert.equal(await ask(port, 'after').answer, 'successor:after')
  await close(successor)
})

test('without a hold, the same gap refuses connections', async () => {
  const port = await freePort()
  await close(await serve(port, () => 'dead'))
  await assert.rejects(ask(port, 'x').connected, { code: 'ECONNREFUSED' })
})

test('dropped: parked connections are reset, and the port is let go', async () => {
  const port = await freePort()
  const hold = await holdPort(`127.0.0.1:${port}`)
  const asks = Array.from({ length: 3 }, () => ask(port, 'x'))
  await Promise.all(asks.map((a) => a.connected))
  while (hold.held() < 3) await new Promise((r) => setImmediate(r))
  hold.drop()
  assert.deepEqual(await Promise.all(asks.map((a) => a.answer)), Array(3).fill('error:ECONNRESET'))
  await assert.rejects(ask(port, 'x').connected, { code: 'ECONNREFUSED' })
})

test('a port held by a socket that does not share it cannot be held: ERR_PORT_HOLD', async () => {
  const port = await freePort()
  const other = createServer()
  await new Promise<void>((resolve) => other.listen({ host: '127.0.0.1', port }, () => resolve()))
  await assert.rejects(holdPort(`127.0.0.1:${port}`), { code: 'ERR_PORT_HOLD' })
  await close(other)
})
