/** A strict reader of the Prometheus text exposition format (0.0.4), enough to assert on in tests. */
export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)/y
const META = /^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$/

export function parsePromText(text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    if (line.startsWith('#')) {
      if (!META.test(line)) throw new Error(`bad comment line: ${line}`)
      continue
    }
    const m = SAMPLE.exec(line)
    if (!m) throw new Error(`bad sample line: ${line}`)
    const labels: Record<string, string> = {}
    if (m[2]) {
      LABEL.lastIndex = 0
      while (LABEL.lastIndex < m[2].length) {
        const at = LABEL.lastIndex
        const l = LABEL.exec(m[2])
        if (!l || l.index !== at) throw new Error(`bad labels in: ${line}`)
        labels[l[1]!] = l[2]!
      }
    }
    // Prometheus parses values with Go's ParseFloat: NaN and Inf in any case (prom-client prints "Nan").
    const nan = /^nan$/i.test(m[3]!)
    const inf = /^([+-]?)inf$/i.exec(m[3]!)
    const value = nan ? Number.NaN : inf ? (inf[1] === '-' ? -Infinity : Infinity) : Number(m[3])
    if (Number.isNaN(value) && !nan) throw new Error(`bad value in: ${line}`)
    samples.push({ name: m[1]!, labels, value })
  }
  return samples
}
