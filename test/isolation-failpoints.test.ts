import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parseFailpoints } from '../shared/failpoints.js'
import { startSidecar } from './support/sidecar.js'

/** The worker-fault actions the isolation tests drive: crash, reject, exit(<code>), block, oom. */
describe('worker-fault failpoints', () => {
  test('parse with their arguments and hit counts', () => {
    const specs = parseFailpoints(
      'gateway.before-task:server=3*crash;token.start=reject;metrics.shutdown=exit(3);' +
        'certificate.start=exit;healthcheck.start=1*block;memory-reporter.start=oom',
    )
    assert.deepEqual(
      specs.map((s) => [s.name, s.action, s.times]),
      [
        ['gateway.before-task:server', { kind: 'crash' }, 3],
        ['token.start', { kind: 'reject' }, undefined],
        ['metrics.shutdown', { kind: 'exit', code: 3 }, undefined],
        ['certificate.start', { kind: 'exit', code: 0 }, undefined],
        ['healthcheck.start', { kind: 'block' }, 1],
        ['memory-reporter.start', { kind: 'oom' }, undefined],
      ],
    )
  })

  test('are refused on the supervisor, whose thread they would take down', () => {
    for (const action of ['crash', 'reject', 'exit(1)', 'block', 'oom']) {
      assert.throws(() => parseFailpoints(`supervisor.during-shutdown=${action}`), {
        code: 'ERR_FAILPOINT_SPEC',
        message: /applies only inside a worker/,
      })
    }
    assert.throws(() => parseFailpoints('gateway.start=exit(x)'), { code: 'ERR_FAILPOINT_SPEC' })
  })

  test('a misplaced one is a configuration error: exit 2 naming SIA_FAILPOINTS, nothing started', async () => {
    const sc = startSidecar({ env: { SIA_FAILPOINTS: 'supervisor.before-start:gateway=block' } })
    const { code } = await sc.exited
    assert.equal(code, 2)
    assert.match(sc.stderr(), /SIA_FAILPOINTS.*"block" applies only inside a worker/)
    assert.deepEqual(sc.records, [])
  })
})
