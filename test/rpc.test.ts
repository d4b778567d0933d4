import assert from 'node:assert/strict'
import { test } from 'node:test'
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads'
import { codedError } from '../shared/errors.js'
import { createRpc, type OpMap } from '../shared/rpc.js'

interface Ops extends OpMap {
  echo: { args: string; result: string }
  fail: { args: null; result: null }
  never: { args: null; result: null }
}

function pair() {
  const { port1, port2 } = new MessageChannel()
  const client = createRpc<Ops, OpMap>(port1)
  const server = createRpc<OpMap, Ops>(port2)
  return { client, server, port1, port2 }
}

test('requests get their answers by id; errors cross with name, message and code', async () => {
  const { client, server } = pair()
  server.handle('echo', (s) => s.toUpperCase())
  server.handle('fail', () => {
    throw codedError('ERR_BOOM', 'it broke')
  })
  assert.deepEqual(
    await Promise.all([client.request('echo', 'a', 1000), client.request('echo', 'b', 1000)]),
    ['A', 'B'],
  )
  await assert.rejects(client.request('fail', null, 1000), (err: Error & { code?: string }) => {
    return err.code === 'ERR_BOOM' && err.message === 'it broke' && /rpc\.test/.test(err.stack ?? '')
  })
  await assert.rejects(client.request('nosuch' as 'echo', 'x', 1000), { code: 'ERR_RPC_UNKNOWN_OP' })
  client.close(codedError('ERR_TEST_DONE', 'done'))
  server.close(codedError('ERR_TEST_DONE', 'done'))
})

test('no request waits forever: the deadline rejects it', async () => {
  const { client, server } = pair()
  server.handle('never', () => new Promise<null>(() => {}))
  await assert.rejects(client.request('never', null, 50), { code: 'ERR_RPC_TIMEOUT' })
  client.close(codedError('ERR_TEST_DONE', 'done'))
  server.close(codedError('ERR_TEST_DONE', 'done'))
})

test('close rejects every pending request with its reason, and refuses new ones', async () => {
  const { client } = pair()
  const pending = client.request('never', null, 10_000)
  client.close(codedError('ERR_WORKER_EXITED', 'worker exited'))
  await assert.rejects(pending, { code: 'ERR_WORKER_EXITED' })
  await assert.rejects(client.request('echo', 'x', 1000), { code: 'ERR_WORKER_EXITED' })
})

test('an answer already queued when the worker exits is delivered, not dropped', async () => {
  const { client, port2 } = pair()
  const answered = client.request('echo', 'x', 10_000)
  // The worker side: read the request, answer, and "die" before the main thread's event loop
  // has looked at its port: close() comes first, as a thread's exit event can.
  const req = receiveMessageOnPort(port2)?.message as { id: number }
  port2.postMessage({ k: 'res', id: req.id, ok: true, value: 'X' })
  client.close(codedError('ERR_WORKER_EXITED', 'worker exited'))
  assert.equal(await answered, 'X')
})

test('a message of another shape is dropped, not thrown on the receiving thread; requests after it are answered', async () => {
  const { client, server, port1, port2 } = pair()
  server.handle('echo', (s) => s.toUpperCase())
  const uncaught: unknown[] = []
  const onUncaught = (err: unknown) => uncaught.push(err)
  process.on('uncaughtException', onUncaught)
  try {
    for (const junk of [null, 7, 'res', { k: 'req' }, { k: 'res' }, { k: 'req', id: 1, op: 3 }]) {
      port1.postMessage(junk)
      port2.postMessage(junk)
    }
    assert.equal(await client.request('echo', 'after', 1000), 'AFTER')
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual(uncaught, [])
  } finally {
    process.off('uncaughtException', onUncaught)
    client.close(codedError('ERR_TEST_DONE', 'done'))
    server.close(codedError('ERR_TEST_DONE', 'done'))
  }
})

test('a reply with neither a value nor an error rejects its request at once with ERR_RPC_BAD_REPLY, nothing thrown on the receiving thread', async () => {
  // The other side played here, with no rpc of its own on its port.
  const { port1, port2 } = new MessageChannel()
  const client = createRpc<Ops, OpMap>(port1)
  const uncaught: unknown[] = []
  const onUncaught = (err: unknown) => uncaught.push(err)
  process.on('uncaughtException', onUncaught)
  // The other thread's answers: an error that is not one, one without a message, no `ok` at all.
  const replies = [
    { ok: false, error: null },
    { ok: false, error: { message: 5 } },
    { ok: false, error: 'it broke' },
    { value: 'X' },
  ]
  port2.on('message', (m: { k: string; id: number }) => {
    if (m.k === 'req') port2.postMessage({ k: 'res', id: m.id, ...replies[m.id - 1] })
  })
  try {
    for (const _ of replies) {
      // Well before its deadline: the request is not left to time out.
      await assert.rejects(client.request('echo', 'x', 10_000), { code: 'ERR_RPC_BAD_REPLY' })
    }
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual(uncaught, [])
  } finally {
    process.off('uncaughtException', onUncaught)
    client.close(codedError('ERR_TEST_DONE', 'done'))
    port2.close()
  }
})

test('a malformed reply still queued when the worker exits: close() rejects it and every other pending request', async () => {
  const { client, port2 } = pair()
  const answered = client.request('echo', 'x', 10_000)
  const other = client.request('never', null, 10_000)
  const req = receiveMessageOnPort(port2)?.message as { id: number }
  port2.postMessage({ k: 'res', id: req.id, ok: false, error: null })
  client.close(codedError('ERR_WORKER_EXITED', 'worker exited'))
  await assert.rejects(answered, { code: 'ERR_RPC_BAD_REPLY' })
  await assert.rejects(other, { code: 'ERR_WORKER_EXITED' })
})
