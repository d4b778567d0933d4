import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, connect } from 'node:net'
import { test } from 'node:test'
import { type BodyResult, readBody } from '../shared/http/body.js'

/**
 * The body reader decodes a body of several chunks as they arrive (shared/http/body.ts). Chunked
 * transfer encoding makes each HTTP chunk a 'data' event of its own, so a character can be split
 * between chunks here exactly where the test puts the split.
 */
async function serve(t: { after(fn: () => unknown): void }, limit: number) {
  const results: BodyResult[] = []
  const server: Server = createServer(async (req, res) => {
    const r = await readBody(req, limit)
    results.push(r)
    res.writeHead(r.ok ? 200 : 413, { connection: 'close' }).end()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  return { port: (server.address() as AddressInfo).port, results }
}

/** Sends `parts` as the chunks of one request and reads the status line of the answer. */
async function sendChunked(port: number, parts: Buffer[]): Promise<string> {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  const head = 'POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n'
  const chunks = parts.map((p) =>
    Buffer.concat([Buffer.from(`${p.length.toString(16)}\r\n`), p, Buffer.from('\r\n')]),
  )
  socket.end(Buffer.concat([Buffer.from(head), ...chunks, Buffer.from('0\r\n\r\n')]))
  let answer = ''
  for await (const data of socket) answer += String(data)
  return answer.split('\r\n')[0]!
}

test('characters split between chunks are decoded whole', async (t) => {
  const { port, results } = await serve(t, 1024)
  const text = '{"a":"é€😀"}'
  const bytes = Buffer.from(text)
  // Splits inside é (2 bytes), inside € (3 bytes) and twice inside 😀 (4 bytes).
  const at = [8, 10, 13, 14, bytes.length]
  const parts = at.map((end, i) => bytes.subarray(i === 0 ? 0 : at[i - 1], end))
  assert.equal(await sendChunked(port, parts), 'HTTP/1.1 200 OK')
  assert.deepEqual(
    results.map((r) => r.ok && r.text),
    [text],
  )
})

test('a body of one chunk, and an empty body', async (t) => {
  const { port, results } = await serve(t, 1024)
  assert.equal(await sendChunked(port, [Buffer.from('{"é":1}')]), 'HTTP/1.1 200 OK')
  assert.equal(await sendChunked(port, []), 'HTTP/1.1 200 OK')
  assert.deepEqual(
    results.map((r) => r.ok && r.text),
    ['{"é":1}', ''],
  )
})

test('past the limit, over several chunks, the read stops with too-large', async (t) => {
  const { port, results } = await serve(t, 10)
  assert.equal(
    await sendChunked(port, [Buffer.from('123456'), Buffer.from('7890'), Buffer.from('x')]),
    'HTTP/1.1 413 Payload Too Large',
  )
  assert.deepEqual(results, [{ ok: false, reason: 'too-large' }])
})

test('bytes that are not UTF-8 end the read with not-utf8, in one chunk or split between several', async (t) => {
  const { port, results } = await serve(t, 1024)
  const bad = (b: number) => Buffer.concat([Buffer.from('{"v":"'), Buffer.from([b]), Buffer.from('"}')])
  // One chunk: 0xFF, 0xFE, 0xC0 each became U+FFFD, three different bodies one text.
  for (const b of [0xff, 0xfe, 0xc0])
    assert.equal(await sendChunked(port, [bad(b)]), 'HTTP/1.1 413 Payload Too Large')
  // Several chunks: a stray byte in the second, and a character cut short at the very end.
  assert.equal(await sendChunked(port, [Buffer.from('{"v":'), bad(0xff)]), 'HTTP/1.1 413 Payload Too Large')
  assert.equal(
    await sendChunked(port, [Buffer.from('{"v":"'), Buffer.from('é').subarray(0, 1)]),
    'HTTP/1.1 413 Payload Too Large',
  )
  // A byte order mark is kept, as before: the body is what was sent.
  assert.equal(await sendChunked(port, [Buffer.from('\uFEFF{}')]), 'HTTP/1.1 200 OK')
  assert.equal(await sendChunked(port, [Buffer.from('\uFEFF'), Buffer.from('{}')]), 'HTTP/1.1 200 OK')
  assert.deepEqual(
    results.map((r) => (r.ok ? r.text : r.reason)),
    ['not-utf8', 'not-utf8', 'not-utf8', 'not-utf8', 'not-utf8', '\uFEFF{}', '\uFEFF{}'],
  )
})
