import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { relative } from 'node:path'
import type { Row } from './measures.js'

/**
 * `npm run bench`: the figures on the image's Node (the one first on PATH, 26 in CI) and, as a
 * second column, on every other runtime given in BENCH_NODES (default: the machine's /usr/bin/node
 * when it is another major, Node 20 here). Each runtime runs test/bench/run.js in a process of its
 * own, so every sidecar it starts runs on that Node; the cost curves are drawn for the first only.
 */
interface Results {
  machine: string
  rows: Row[]
  curves: { name: string; lines: string[]; png?: string }[]
}

function major(node: string): string {
  return execFileSync(node, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).trim()
}

const primary = process.execPath
const others = (process.env.BENCH_NODES?.split(',').filter(Boolean) ?? ['/usr/bin/node']).filter(
  (n) => existsSync(n) && major(n) !== major(primary),
)

function runOn(node: string, results: string, skipCurves: boolean): Promise<Results> {
  const env: NodeJS.ProcessEnv = { ...process.env, BENCH_RESULTS: results }
  if (skipCurves) env.BENCH_SKIP = [process.env.BENCH_SKIP, 'curves'].filter(Boolean).join(',')
  const child = spawn(node, [new URL('./run.js', import.meta.url).pathname], {
    env,
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  return new Promise((resolve, reject) =>
    child.once('exit', (code) =>
      code === 0
        ? resolve(JSON.parse(readFileSync(results, 'utf8')) as Results)
        : reject(new Error(`the bench on ${node} exited with ${code}`)),
    ),
  )
}

const sameFigure = (a: string, b: string) =>
  a.replace(/\(\d+ [^)]*\)/g, '') === b.replace(/\(\d+ [^)]*\)/g, '')
// A ratio the JSON file holds as null was NaN when measured.
const fmtRatio = (r: Row | undefined) => (r?.ratio == null ? '—' : `${r.ratio.toFixed(2)}×`)
const verdict = (r: Row | undefined) => (r?.pass === undefined ? '—' : r.pass ? 'PASS' : 'FAIL')

mkdirSync('bench', { recursive: true })
const main = await runOn(primary, 'bench/results.json', false)
const second: { node: string; major: string; results: Results }[] = []
for (const node of others) {
  const m = major(node)
  second.push({ node, major: m, results: await runOn(node, `bench/results-node${m}.json`, true) })
}
const head = `Node ${major(primary)}`
const lines = [
  `Machine: ${main.machine}.`,
  '',
  `| figure | ${head} | reference (same run) | ratio | target | verdict |${second.map((s) => ` Node ${s.major} | ratio |`).join('')}`,
  `|---|---|---|---|---|---|${second.map(() => '---|---|').join('')}`,
  ...main.rows.map((r) => {
    const cols = second.map((s) => {
      // Figures that name a count (series, alerts) match on the rest of their name.
      const o = s.results.rows.find((x) => sameFigure(x.figure, r.figure))
      return ` ${o?.value ?? '—'} | ${fmtRatio(o)} |`
    })
    return `| ${r.figure} | ${r.value} | ${r.reference} | ${fmtRatio(r)} | ${r.target} | ${verdict(r)} |${cols.join('')}`
  }),
  ...main.curves.flatMap((c) => [
    '',
    `${c.name}${c.png ? ` (${relative(process.cwd(), c.png)})` : ''}:`,
    ...c.lines.map((l) => `- ${l}`),
  ]),
]
writeFileSync('bench/results.md', `${lines.join('\n')}\n`)
console.log(lines.join('\n'))
