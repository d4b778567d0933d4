import { execFileSync } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'

/**
 * The bench's cost curves as charts: a line chart in plain SVG (no plotting dependency), turned
 * into PNG by headless Chromium where the machine has it (CI installs it for the status-page test).
 */
export interface Series {
  name: string
  points: readonly (readonly [number, number])[]
}

export interface Chart {
  title: string
  xLabel: string
  yLabel: string
  series: readonly Series[]
}

const W = 720
const H = 420
const M = { left: 70, right: 20, top: 40, bottom: 55 }
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e']

/** 0 and about five round steps up to at least `max`. */
function ticks(max: number): number[] {
  const raw = (max || 1) / 5
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag
  const out: number[] = []
  for (let v = 0; v <= max + step * 0.999; v += step) out.push(Number(v.toPrecision(12)))
  return out
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')
const label = (v: number) => (Math.abs(v) >= 1000 ? `${v / 1000}k` : String(v))

export function svgChart(c: Chart): string {
  const xs = c.series.flatMap((s) => s.points.map((p) => p[0]))
  const ys = c.series.flatMap((s) => s.points.map((p) => p[1]))
  const xt = ticks(Math.max(...xs))
  const yt = ticks(Math.max(...ys))
  const xMax = xt.at(-1) ?? 1
  const yMax = yt.at(-1) ?? 1
  const px = (x: number) => M.left + (x / xMax) * (W - M.left - M.right)
  const py = (y: number) => H - M.bottom - (y / yMax) * (H - M.top - M.bottom)
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<title>${esc(c.title)}</title>`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(c.title)}</text>`,
  ]
  for (const t of yt) {
    parts.push(
      `<line x1="${M.left}" x2="${W - M.right}" y1="${py(t)}" y2="${py(t)}" stroke="#e5e5e5"/>`,
      `<text x="${M.left - 6}" y="${py(t) + 4}" text-anchor="end">${label(t)}</text>`,
    )
  }
  for (const t of xt) {
    parts.push(`<text x="${px(t)}" y="${H - M.bottom + 16}" text-anchor="middle">${label(t)}</text>`)
  }
  parts.push(
    `<line x1="${M.left}" x2="${W - M.right}" y1="${py(0)}" y2="${py(0)}" stroke="#333"/>`,
    `<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${py(0)}" stroke="#333"/>`,
    `<text x="${(M.left + W - M.right) / 2}" y="${H - 12}" text-anchor="middle">${esc(c.xLabel)}</text>`,
    `<text transform="translate(16 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`,
  )
  c.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]
    const pts = s.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')
    parts.push(`<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="2"/>`)
    for (const [x, y] of s.points)
      parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${color}"/>`)
    const ly = M.top + 8 + i * 16
    parts.push(
      `<line x1="${W - M.right - 170}" x2="${W - M.right - 150}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
      `<text x="${W - M.right - 145}" y="${ly + 4}">${esc(s.name)}</text>`,
    )
  })
  parts.push('</svg>')
  return parts.join('\n')
}

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find(existsSync)

/** Writes `<base>.svg`, and `<base>.png` when Chromium is there; returns the PNG path or undefined. */
export function writeChart(base: string, c: Chart): string | undefined {
  writeFileSync(`${base}.svg`, svgChart(c))
  if (!CHROMIUM) return undefined
  try {
    execFileSync(
      CHROMIUM,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--hide-scrollbars',
        `--window-size=${W},${H}`,
        `--screenshot=${base}.png`,
        `file://${base}.svg`,
      ],
      { stdio: 'ignore', timeout: 60_000 },
    )
    return existsSync(`${base}.png`) ? `${base}.png` : undefined
  } catch {
    return undefined
  }
}
