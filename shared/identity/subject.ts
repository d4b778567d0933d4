/**
 * CERT_SUBJECT: the subject of the service certificate besides its CN, as an RFC 4514 string
 * ("OU=Athenz,O=Example Inc.,C=US"). The attribute types are those of Go's pkix.Name, which SIA
 * fills from it; CN and SERIALNUMBER are SIA's to set (the principal, the instance), so naming them
 * is an error rather than silently ignored.
 */
export interface SubjectAttribute {
  /** Short name as in the string: C, ST, L, O, OU, STREET, POSTALCODE. */
  type: SubjectType
  value: string
}

export const SUBJECT_TYPES = ['C', 'ST', 'L', 'STREET', 'POSTALCODE', 'O', 'OU'] as const
export type SubjectType = (typeof SUBJECT_TYPES)[number]

/** node-forge's attribute names for the types above. */
export const FORGE_NAMES: Record<SubjectType, string> = {
  C: 'countryName',
  ST: 'stateOrProvinceName',
  L: 'localityName',
  STREET: 'streetAddress',
  POSTALCODE: 'postalCode',
  O: 'organizationName',
  OU: 'organizationalUnitName',
}

/** OIDs RFC 4514 allows in place of a short name (`2.5.4.11=Athenz`). */
const BY_OID: Record<string, SubjectType | 'CN' | 'SERIALNUMBER'> = {
  '2.5.4.3': 'CN',
  '2.5.4.5': 'SERIALNUMBER',
  '2.5.4.6': 'C',
  '2.5.4.8': 'ST',
  '2.5.4.7': 'L',
  '2.5.4.9': 'STREET',
  '2.5.4.17': 'POSTALCODE',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
}

/** SIA's default subject besides the CN (OU=Athenz, C=US, in the order of the original CSRs). */
export const DEFAULT_SUBJECT: SubjectAttribute[] = [
  { type: 'OU', value: 'Athenz' },
  { type: 'C', value: 'US' },
]

const SPECIAL = new Set([',', '+', '"', '\\', '<', '>', ';', '=', ' ', '#'])

/**
 * Parses an RFC 4514 distinguished name into its attributes, in the order written (a multi-valued
 * RDN, `OU=a+OU=b`, becomes consecutive attributes). Throws with a reason naming the problem.
 */
export function parseSubject(text: string): SubjectAttribute[] {
  const out: SubjectAttribute[] = []
  let i = 0
  const fail = (why: string): never => {
    throw new Error(`${why} (at offset ${i}); expected RFC 4514, e.g. "OU=Athenz,O=Example,C=US"`)
  }
  const skipSpaces = () => {
    while (text[i] === ' ') i++
  }
  if (text.trim() === '') fail('empty subject')
  for (;;) {
    skipSpaces()
    const typeStart = i
    while (i < text.length && text[i] !== '=' && text[i] !== ',' && text[i] !== '+') i++
    const rawType = text.slice(typeStart, i).trim()
    if (text[i] !== '=') fail(`"${rawType}" has no "="`)
    i++ // '='
    const type = attributeType(rawType)
    skipSpaces()
    if (text[i] === '#') fail(`the hex (BER) form of ${rawType} is not supported`)
    let value = ''
    let pendingSpaces = ''
    const bytes: number[] = []
    const flushBytes = () => {
      if (bytes.length === 0) return
      const decoded = new TextDecoder('utf-8', { fatal: true })
      try {
        value += decoded.decode(new Uint8Array(bytes))
      } catch {
        fail(`${rawType} has an escaped byte sequence that is not UTF-8`)
      }
      bytes.length = 0
    }
    while (i < text.length && text[i] !== ',' && text[i] !== '+') {
      const c = text[i]!
      if (c === '\\') {
        const next = text[i + 1]
        if (next !== undefined && /[0-9a-fA-F]/.test(next) && /[0-9a-fA-F]/.test(text[i + 2] ?? '')) {
          value += pendingSpaces
          pendingSpaces = ''
          bytes.push(Number.parseInt(text.slice(i + 1, i + 3), 16))
          i += 3
          continue
        }
        if (next === undefined || !SPECIAL.has(next))
          fail(`${rawType} has an invalid escape "\\${next ?? ''}"`)
        flushBytes()
        value += pendingSpaces + next
        pendingSpaces = ''
        i += 2
        continue
      }
      flushBytes()
      if (c === ' ') {
        pendingSpaces += c // trailing unescaped spaces are not part of the value
      } else if (c === '"' || c === ';' || c === '<' || c === '>' || c === '=') {
        fail(`${rawType} has an unescaped "${c}"`)
      } else {
        value += pendingSpaces + c
        pendingSpaces = ''
      }
      i++
    }
    flushBytes()
    if (value === '') fail(`${rawType} is empty`)
    if (value.includes('\0')) fail(`${rawType} holds a NUL character`)
    out.push({ type, value })
    if (i >= text.length) return out
    i++ // ',' or '+'
    if (i >= text.length) fail('a trailing separator')
  }
}

function attributeType(raw: string): SubjectType {
  const upper = raw.toUpperCase()
  const known = BY_OID[raw] ?? upper
  if (known === 'CN' || known === 'COMMONNAME') {
    throw new Error('CN is not allowed: the common name is the Athenz principal, set by the sidecar')
  }
  if (known === 'SERIALNUMBER') {
    throw new Error("SERIALNUMBER is not allowed: it is not the workload's to choose")
  }
  if ((SUBJECT_TYPES as readonly string[]).includes(known)) return known as SubjectType
  throw new Error(
    `unsupported attribute type "${raw}" (allowed: ${SUBJECT_TYPES.join(', ')}, the fields of a certificate subject SIA fills)`,
  )
}
