import { parseArgs } from 'node:util'
import { planFor } from './plan.js'
import { type RunReport, runPlan } from './run-plan.js'

/**
 * `npm run chaos -- --runs N [--seed S] [--jobs J]`: N runs with seeds S, S+1, … (S random when
 * not given, printed first). A failing run prints its seed and the command that replays it.
 */
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '30' },
    seed: { type: 'string' },
    jobs: { type: 'string', default: '1' },
  },
})
const runs = Number(values.runs)
const first = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed)
const jobs = Math.max(1, Number(values.jobs))
process.stdout.write(`chaos: ${runs} runs from seed ${first}, ${jobs} at a time\n`)

const reports: RunReport[] = []
let next = 0
async function worker(): Promise<void> {
  while (next < runs) {
    const seed = first + next++
    const r = await runPlan(planFor(seed))
    reports.push(r)
    const mark = r.violations.length ? 'FAIL' : 'ok  '
    const ratio = r.exitMs === undefined ? '' : ` exit ${r.exitMs}ms/${r.budgetMs}ms`
    process.stdout.write(`${mark} seed ${seed} code ${r.code} ${r.cause ?? '-'}${ratio}  ${r.failpoints}\n`)
    for (const v of r.violations) process.stdout.write(`       ${v}\n`)
    if (r.violations.length) {
      for (const l of r.lifecycle) {
        const { time, event, service, code, cause, outcome, reason } = l
        process.stdout.write(
          `         ${time} ${event} ${service} ${JSON.stringify({ code, cause, outcome, reason })}\n`,
        )
      }
      process.stdout.write(`       replay: npm run chaos -- --runs 1 --seed ${seed}\n`)
    }
  }
}
await Promise.all(Array.from({ length: jobs }, worker))

const table = new Map<string, number>()
for (const r of reports) {
  const key = `exit ${r.code} (${r.cause ?? 'none'})`
  table.set(key, (table.get(key) ?? 0) + 1)
}
const slowest = reports
  .filter((r) => r.exitMs !== undefined)
  .sort((a, b) => b.exitMs! / (b.budgetMs + 1000) - a.exitMs! / (a.budgetMs + 1000))[0]
const failed = reports.filter((r) => r.violations.length > 0)
process.stdout.write('\n| outcome | runs |\n|---|---|\n')
for (const [k, n] of [...table].sort()) process.stdout.write(`| ${k} | ${n} |\n`)
if (slowest) {
  process.stdout.write(
    `\nslowest exit: seed ${slowest.seed}, ${slowest.exitMs}ms after the cancel against a budget of ${slowest.budgetMs}ms + 1000ms (${Math.round((100 * slowest.exitMs!) / (slowest.budgetMs + 1000))}%)\n`,
  )
}
const holds = reports.map((r) => r.lifecycle.filter((l) => l.event === 'worker.port.held').length)
process.stdout.write(
  `ports held for a successor: ${holds.reduce((a, b) => a + b, 0)} times, in ${holds.filter((n) => n > 0).length} runs\n`,
)
process.stdout.write(`${runs - failed.length} passed, ${failed.length} failed\n`)
if (failed.length) {
  process.stdout.write(`failing seeds: ${failed.map((r) => r.seed).join(' ')}\n`)
  process.exitCode = 1
}
