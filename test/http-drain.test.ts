import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type RequestListener, type Server } from 'node:http'
import { type AddressInfo, connect, type Socket } from 'node:net'
import { test } from 'node:test'
import { monotonicMs } from '../shared/clock.js'
import { trackConnections } from '../shared/http/connections.js'
import { drain } from '../shared/http-server.js'

/** What the peer sent until it closed, and how it ended (a reset or a normal close). */
function readAll(socket: Socket): Promise<{ text: string; error?: string }> {
  let text = ''
  socket.setEncoding('utf8').on('data', (d: string) => {
    text += d
  })
  return new Promise((resolve) => {
    socket.on('error', (err: NodeJS.ErrnoException) => resolve({ text, error: err.code }))
    socket.on('close', () => resolve({ text }))
  })
}

async function serving(
  t: { after(fn: () => void): void },
  handler: RequestListener = (_req, res) => res.end('ok'),
) {
  const server: Server = createServer(handler)
  const conns = trackConnections(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.closeAllConnections())
  return { server, conns, port: (server.address() as AddressInfo).port }
}

const GET = 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'

test('a connection accepted just before the drain, whose request is read just after, is answered', async (t) => {
  const { server, conns, port } = await serving(t)
  const client = connect(port, '127.0.0.1')
  const answer = readAll(client)
  await once(server, 'connection') // accepted; nothing sent yet, so Node counts it idle
  const drained = drain(server, monotonicMs() + 5000, conns)
  client.write(GET)
  const { text, error } = await answer
  assert.equal(error, undefined)
  assert.match(text, /^HTTP\/1\.1 200 /)
  assert.equal(await drained, false, 'drained without destroying work')
})

test('an answer given during the drain closes its keep-alive connection: no next request goes out on one the drain is closing', async (t) => {
  let release!: () => void
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  const { server, conns, port } = await serving(t, (_req, res) => void held.then(() => res.end('ok')))
  const client = connect(port, '127.0.0.1')
  const answer = readAll(client)
  client.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n') // keep-alive, its answer held
  await once(server, 'request')
  const drained = drain(server, monotonicMs() + 5000, conns)
  release()
  const { text, error } = await answer
  assert.equal(error, undefined)
  assert.match(text, /^HTTP\/1\.1 200 /)
  assert.match(text, /\r\nconnection: close\r\n/i, 'the client is told not to send another request on it')
  assert.equal(await drained, false)
})

test('a request pipelined behind one in flight when the drain begins is answered too, and the connection closed after it', async (t) => {
  let release!: () => void
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  const { server, conns, port } = await serving(t, (req, res) =>
    req.url === '/slow' ? void held.then(() => res.end('slow')) : res.end('second'),
  )
  const client = connect(port, '127.0.0.1')
  const answer = readAll(client)
  client.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n')
  await once(server, 'request')
  const drained = drain(server, monotonicMs() + 5000, conns)
  client.write('GET /second HTTP/1.1\r\nHost: x\r\n\r\n') // read while the first is held
  await once(server, 'request')
  release()
  const { text, error } = await answer
  assert.equal(error, undefined)
  const answers = text.split('HTTP/1.1 ').slice(1)
  assert.equal(answers.length, 2, text)
  assert.match(answers[0]!, /keep-alive[\s\S]*slow$/i, 'the first leaves the connection open for the second')
  assert.match(answers[1]!, /connection: close[\s\S]*second$/i, 'the last closes it')
  assert.equal(await drained, false)
})

test('the drain closes an idle keep-alive connection and a silent one, and ends before its deadline', async (t) => {
  const { server, conns, port } = await serving(t)
  const keepAlive = connect(port, '127.0.0.1')
  const keepAliveEnd = readAll(keepAlive)
  keepAlive.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  await once(keepAlive, 'data') // answered, the connection stays open
  const silent = connect(port, '127.0.0.1')
  const silentEnd = readAll(silent)
  await once(server, 'connection')
  assert.equal(await drain(server, monotonicMs() + 60_000, conns), false)
  assert.match((await keepAliveEnd).text, /^HTTP\/1\.1 200 /)
  assert.equal((await silentEnd).text, '', 'the silent connection was closed unanswered')
  assert.equal(server.listening, false)
})

test('an answer still being sent to a slow reader is sent whole before its connection closes: the drain is clean', async (t) => {
  const body = Buffer.alloc(16 << 20, 'x')
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': body.length })
    res.end(body)
  })
  const conns = trackConnections(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.closeAllConnections())
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1')
  let got = 0
  client.on('data', (d: Buffer) => {
    got += d.length
    client.pause() // a reader slower than the server: 10 ms between reads
    setTimeout(() => client.resume(), 10)
  })
  const closed = once(client, 'close')
  client.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  await new Promise((r) => setTimeout(r, 300)) // the answer has ended; most of it is unsent
  const cut = await drain(server, monotonicMs() + 30_000, conns)
  await closed
  assert.equal(cut, false, 'nothing was cut')
  assert.ok(got >= body.length, `${got} bytes read of ${body.length}`)
})

test('a deadline already past: an idle keep-alive connection cut is no work lost, a request being answered is', async (t) => {
  let hold: (() => void) | undefined
  const server: Server = createServer((req, res) => {
    if (req.url === '/slow') hold = () => res.end('late')
    else res.end('ok')
  })
  const conns = trackConnections(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.closeAllConnections())
  const port = (server.address() as AddressInfo).port
  const keepAlive = connect(port, '127.0.0.1')
  const keepAliveEnd = readAll(keepAlive)
  keepAlive.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  await once(keepAlive, 'data')
  assert.equal(await drain(server, monotonicMs(), conns), false, 'an idle service given no time stops clean')
  await keepAliveEnd

  const again: Server = createServer((req, res) => {
    if (req.url === '/slow') hold = () => res.end('late')
  })
  const busy = trackConnections(again)
  again.listen(0, '127.0.0.1')
  await once(again, 'listening')
  t.after(() => again.closeAllConnections())
  const client = connect((again.address() as AddressInfo).port, '127.0.0.1')
  const clientEnd = readAll(client)
  client.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n')
  await once(again, 'request')
  assert.equal(await drain(again, monotonicMs(), busy), true, 'a request cut unanswered is work lost')
  assert.equal((await clientEnd).text, '')
  hold?.()
})

/**
 * A server of `handler` holding at most two connections, and how to open one (its socket, and what
 * it received until it closed); `closed` says, for each connection past the cap, whether an older
 * one was closed for it (true) or it was (false).
 */
async function capped(t: { after(fn: () => void): void }, handler: RequestListener) {
  const server: Server = createServer(handler)
  const closed: boolean[] = []
  trackConnections(server, { maxConnections: 2, onFull: (evicted) => closed.push(evicted) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => {
    server.close()
    server.closeAllConnections()
  })
  const { port } = server.address() as AddressInfo
  const open = async () => {
    const s = connect(port, '127.0.0.1')
    const end = readAll(s)
    await once(server, 'connection')
    return { s, end }
  }
  return { closed, open }
}

test('past maxConnections the oldest connection running no handler is closed for the new one; one running a handler never is', async (t) => {
  const held: (() => void)[] = []
  const { closed, open } = await capped(t, (_req, res) => held.push(() => res.end('ok')))
  const idle = await open() // nothing sent: a slowloris, or a client not yet talking
  const working = await open()
  working.s.write(GET)
  while (held.length < 1) await new Promise((r) => setImmediate(r))
  const third = await open() // the idle one makes room
  assert.equal((await idle.end).text, '')
  third.s.write(GET)
  while (held.length < 2) await new Promise((r) => setImmediate(r))
  const fourth = await open() // both others run a handler: the new one is closed
  assert.equal((await fourth.end).text, '')
  assert.deepEqual(closed, [true, false])
  for (const answer of held) answer()
  assert.match((await working.end).text, /^HTTP\/1\.1 200 /)
  assert.match((await third.end).text, /^HTTP\/1\.1 200 /)
})

test('a connection whose last pipelined request is answered while one before it is being handled is not taken for idle', async (t) => {
  const held: (() => void)[] = []
  const { open } = await capped(t, (req, res) => {
    if (req.url === '/slow') held.push(() => res.end('slow'))
    else res.end('fast')
  })
  const busy = await open()
  busy.s.write(
    'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  )
  while (held.length < 1) await new Promise((r) => setImmediate(r))
  await new Promise((r) => setTimeout(r, 20)) // the /fast request read and answered (queued)
  const idle = await open()
  await open() // one too many: the idle one makes room, not the one handling /slow
  const first = await Promise.race([idle.end.then(() => 'idle'), busy.end.then(() => 'busy')])
  assert.equal(first, 'idle', 'the idle connection was closed, not the one handling /slow')
  held[0]!()
  const { text } = await busy.end
  assert.match(text, /^HTTP\/1\.1 200 [\s\S]*slow[\s\S]*HTTP\/1\.1 200 [\s\S]*fast/)
})
