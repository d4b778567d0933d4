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
  const hold = await holdPort(`127.0.0.1:${port}`, { maxConnections: 0 })
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
  const hold = await holdPort(`127.0.0.1:${port}`, { maxConnections: 0 })
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
  await assert.rejects(holdPort(`127.0.0.1:${port}`, { maxConnections: 0 }), { code: 'ERR_PORT_HOLD' })
  await close(other)
})

/** Until `ok()`, a turn of the loop at a time. */
async function until(ok: () => boolean): Promise<void> {
  while (!ok()) await new Promise((r) => setImmediate(r))
}

test("a client that sends its request and shuts its side (a half-close) gets the successor's answer", {
  timeout: 10_000,
}, async () => {
  const port = await freePort()
  const hold = await holdPort(`127.0.0.1:${port}`, { maxConnections: 0 })
  const socket = connect({ host: '127.0.0.1', port })
  let got = ''
  socket.on('data', (d) => {
    got += d
  })
  const ended = new Promise((resolve) => socket.once('end', resolve))
  socket.end('ping')
  await until(() => hold.held() === 1)
  const successor = await serve(port, (d) => `successor:${d}`)
  hold.release()
  await ended
  assert.equal(got, 'successor:ping')
  await close(successor)
})

test('clients that leave while parked are let go: they take no place, and no connection is made for them', {
  timeout: 10_000,
}, async () => {
  const port = await freePort()
  const hold = await holdPort(`127.0.0.1:${port}`, { maxConnections: 3 })
  // Ten that come and go (a client retrying on a short timeout), then three that stay.
  for (let i = 0; i < 10; i++) {
    const gone = connect({ host: '127.0.0.1', port })
    await new Promise((resolve) => gone.once('connect', resolve))
    gone.destroy()
  }
  await until(() => hold.held() === 0)
  const asks = Array.from({ length: 3 }, (_, i) => ask(port, `stay${i}`))
  await Promise.all(asks.map((a) => a.connected))
  await until(() => hold.held() === 3)
  let accepted = 0
  const successor = createServer((s) => {
    accepted++
    s.on('data', (d) => s.end(`successor:${d}`))
  })
  await new Promise<void>((resolve) =>
    successor.listen({ host: '127.0.0.1', port, reusePort: true }, () => resolve()),
  )
  hold.release()
  assert.deepEqual(
    await Promise.all(asks.map((a) => a.answer)),
    asks.map((_, i) => `successor:stay${i}`),
  )
  assert.equal(accepted, 3, 'one connection to the successor for each client still there')
  await close(successor)
})

test('no more are parked than the successor accepts (HTTP_MAX_CONNECTIONS): the rest are reset at once', {
  timeout: 10_000,
}, async () => {
  const port = await freePort()
  const hold = await holdPort(`127.0.0.1:${port}`, { maxConnections: 2 })
  const answered: string[] = []
  for (const a of Array.from({ length: 4 }, () => ask(port, 'x'))) void a.answer.then((r) => answered.push(r))
  await until(() => hold.held() === 2 && answered.length === 2)
  assert.deepEqual(answered, ['error:ECONNRESET', 'error:ECONNRESET'])
  hold.drop()
})
