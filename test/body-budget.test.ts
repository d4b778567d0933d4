import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createBodyBudget } from '../shared/http/body-budget.js'

/** GATEWAY_MAX_BUFFERED_BYTES as data: who gets room, who is shed. */

function tracked(budget: ReturnType<typeof createBodyBudget>) {
  const shed: string[] = []
  const open = (name: string) => budget.open(() => shed.push(name))
  return { shed, open }
}

test('within the limit every body grows; release gives its bytes back once', () => {
  const budget = createBodyBudget(100)
  const { open, shed } = tracked(budget)
  const a = open('a')
  const b = open('b')
  assert.ok(a.grow(60))
  assert.ok(b.grow(40))
  assert.equal(budget.used(), 100)
  a.release()
  a.release()
  assert.equal(budget.used(), 40)
  assert.deepEqual(shed, [])
})

test('a body that needs room sheds the largest body still arriving that is larger than itself', () => {
  const budget = createBodyBudget(100)
  const { open, shed } = tracked(budget)
  const hog = open('hog')
  const mid = open('mid')
  assert.ok(hog.grow(60))
  assert.ok(mid.grow(30))
  const small = open('small')
  assert.ok(small.grow(20), 'room made')
  assert.deepEqual(shed, ['hog'])
  assert.equal(budget.used(), 50)
  assert.equal(hog.grow(1), false, 'a shed body grows no more')
})

test('a body already whole is never shed; with no larger body arriving, the newcomer gets no room', () => {
  const budget = createBodyBudget(100)
  const { open, shed } = tracked(budget)
  const whole = open('whole')
  assert.ok(whole.grow(90))
  whole.complete()
  const late = open('late')
  assert.equal(late.grow(20), false)
  assert.deepEqual(shed, [])
  // Two equal bodies arriving: the one that asks is not larger than the other, so no one is shed
  // for a body no smaller than itself.
  whole.release()
  const x = open('x')
  const y = open('y')
  assert.ok(x.grow(50))
  assert.ok(y.grow(50))
  assert.equal(y.grow(10), false)
  assert.deepEqual(shed, [])
})

test('limit 0: no budget', () => {
  const budget = createBodyBudget(0)
  const a = budget.open(() => assert.fail('never shed'))
  assert.ok(a.grow(2 ** 40))
})
