import { createRequire } from 'node:module'
import type { Document } from 'yaml'
import { codedError } from '../errors.js'

/**
 * Mistakes a value starting with a YAML indicator makes, unquoted: a tag (`!`), an alias (`*`), a
 * block scalar (`|`, `>`), a reserved character (`%`, `@`, `` ` ``).
 */
const INDICATOR_CODES = new Set([
  'ALIAS_PROPS',
  'BAD_ALIAS',
  'BAD_PROP_ORDER',
  'BAD_SCALAR_START',
  'MULTIPLE_ANCHORS',
  'MULTIPLE_TAGS',
  'TAG_RESOLVE_FAILED',
  'UNEXPECTED_TOKEN',
])
const QUOTE = 'a value that starts with one of ! & * | > % @ ` is written in quotes'

/**
 * The config file as YAML reads it (`typed`), and as written: the same file with every scalar kept
 * as its text (YAML's failsafe schema). The YAML parser is loaded only when there is a config file
 * to read (~30 ms of boot otherwise).
 *
 * Nothing YAML does beyond plain values is taken: a syntax error, a warning, a tag, an anchor or
 * an alias anywhere is an error. Unquoted, a secret starting with `!` was an unknown tag, read as
 * "" (webhook authentication off, in silence) with a warning on stderr quoting its line; one
 * starting with `*`, `|` or `>` was refused in a message quoting it. So the error says where and
 * what kind of mistake, never the parser's message or excerpt, which quote the file. Throws
 * ERR_CONFIG_YAML, with `key`: the top-level key it is under when `isKey` takes it (undefined
 * otherwise: a key is named only when it is a setting's, never text the file happens to hold).
 */
export function parseYaml(
  text: string,
  isKey: (key: string) => boolean,
): { typed: unknown; written: unknown } {
  const yaml = createRequire(import.meta.url)('yaml') as typeof import('yaml')
  const lineCounter = new yaml.LineCounter()
  // parseDocument collects warnings in the document: yaml.parse prints them (process.emitWarning).
  const doc = yaml.parseDocument(text, { lineCounter })
  const fail = (offset: number, kind: string) => {
    const { line, col } = lineCounter.linePos(offset)
    const key = keyAt(yaml, doc, offset)
    throw Object.assign(codedError('ERR_CONFIG_YAML', `line ${line}, column ${col}: ${kind}`), {
      key: key !== undefined && isKey(key) ? key : undefined,
    })
  }
  const [error] = doc.errors
  if (error) {
    const kind = error.code.toLowerCase().replaceAll('_', ' ')
    fail(error.pos[0], INDICATOR_CODES.has(error.code) ? `${kind}; ${QUOTE}` : kind)
  }
  const prop = firstProp(yaml, text)
  if (prop) fail(prop.offset, `a YAML ${prop.type}, which no setting takes; ${QUOTE}`)
  const [warning] = doc.warnings
  if (warning) fail(warning.pos[0], warning.code.toLowerCase().replaceAll('_', ' '))
  return {
    typed: doc.toJS(),
    written: yaml.parseDocument(text, { schema: 'failsafe' }).toJS(),
  }
}

/**
 * Where the first tag (`!`), anchor (`&`) or alias (`*`) is, in the parser's tokens: the
 * document's nodes carry them too, but where their value starts, after them.
 */
function firstProp(yaml: typeof import('yaml'), text: string): { type: string; offset: number } | undefined {
  let first: { type: string; offset: number } | undefined
  const at = (token: { type: string; offset: number } | undefined) => {
    const prop = token?.type === 'tag' || token?.type === 'anchor' || token?.type === 'alias'
    if (prop && (first === undefined || token.offset < first.offset)) first = token
  }
  for (const token of new yaml.Parser().parse(text)) {
    if (token.type !== 'document') continue
    token.start.forEach(at)
    at(token.value)
    yaml.CST.visit(token, (item) => {
      item.start.forEach(at)
      if (item.sep) item.sep.forEach(at)
      at(item.key ?? undefined)
      at(item.value)
    })
  }
  return first
}

/** The top-level key whose entry holds `offset`, if the document is a mapping and one does. */
function keyAt(yaml: typeof import('yaml'), doc: Document, offset: number): string | undefined {
  if (!yaml.isMap(doc.contents)) return undefined
  for (const { key, value } of doc.contents.items) {
    if (!yaml.isScalar(key) || typeof key.value !== 'string' || !key.range) continue
    const end = yaml.isNode(value) && value.range ? value.range[2] : key.range[2]
    if (key.range[0] <= offset && offset <= end) return key.value
  }
  return undefined
}
