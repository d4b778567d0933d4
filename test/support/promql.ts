import { parser } from '@prometheus-io/lezer-promql'

/**
 * The metric names a PromQL expression selects, with Prometheus's own grammar (the lezer parser of
 * its web UI): vector selectors' names and `{__name__="…"}` matchers, nothing from functions, label
 * names, keywords or strings. Grafana's variables are replaced by something PromQL accepts first.
 */
export interface PromqlNames {
  names: string[]
  /** Parse errors, as "at <offset>: <text around it>". */
  errors: string[]
  /** Each vector selector's label matchers, as written (`namespace=~"$namespace"`). */
  selectors: { name: string; matchers: string[] }[]
}

export function grafanaToPromql(expr: string): string {
  return expr
    .replace(/\[\$__(rate_interval|interval|range)\]/g, '[5m]')
    .replace(/\$__(rate_interval|interval|range)_s(econds)?\b/g, '300')
    .replace(/\$__(rate_interval|interval|range)_ms\b/g, '300000')
}

export function promqlNames(expr: string): PromqlNames {
  const tree = parser.parse(expr)
  const names = new Set<string>()
  const errors: string[] = []
  const selectors: PromqlNames['selectors'] = []
  const cursor = tree.cursor()
  do {
    const node = cursor.node
    if (node.type.isError)
      errors.push(`at ${node.from}: ${JSON.stringify(expr.slice(node.from - 10, node.to + 10))}`)
    if (node.name !== 'VectorSelector') continue
    let name = node.getChild('Identifier')
      ? expr.slice(node.getChild('Identifier')!.from, node.getChild('Identifier')!.to)
      : ''
    const matchers: string[] = []
    const list = node.getChild('LabelMatchers')
    for (let m = list?.firstChild; m; m = m.nextSibling) {
      if (!m.name.endsWith('LabelMatcher')) continue
      const text = expr.slice(m.from, m.to)
      matchers.push(text)
      const byName = /^__name__\s*=\s*"([^"]+)"$/.exec(text)
      if (byName) name = byName[1]!
    }
    if (name) names.add(name)
    selectors.push({ name, matchers })
  } while (cursor.next())
  return { names: [...names], errors, selectors }
}

/**
 * The metric names one exposition declares: every sample's name, and every family's `# TYPE`
 * (a counter with labels has no sample before its first increment), with a histogram's and a
 * summary's series names.
 */
export function exposedNames(text: string): Set<string> {
  const names = new Set<string>()
  for (const line of text.split('\n')) {
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)$/.exec(line)
    if (type) {
      const [, name, kind] = type
      names.add(name!)
      if (kind === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s)
      if (kind === 'summary') for (const s of ['_sum', '_count']) names.add(name + s)
      continue
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line)
    if (sample) names.add(sample[1]!)
  }
  return names
}
