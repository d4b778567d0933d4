/** Keys whose value may be a secret, wherever they appear in the first levels of a log record. */
const SECRET_KEYS: ReadonlySet<string> = new Set([
  'token',
  'accessToken',
  'access_token',
  'refresh_token',
  'id_token',
  'client_secret',
  'privateKey',
  'keyPem',
])

/**
 * Names compared in lower case: HTTP headers come in any case (`Authorization`), and a password is
 * one in any. Not the token names: `accesstoken` is a token type's counts in `token.cache.updated`.
 */
const ANY_CASE: ReadonlySet<string> = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'x-api-key',
  'password',
])

export const CENSOR = '[redacted]'

/** Down to an error's `response.headers.authorization` (a client library's error). */
const DEPTH = 5

/**
 * The record as it will be written, with the value of every secret key (`SECRET_KEYS`) replaced by
 * `CENSOR` at the top level and in the object values below it (an error's own properties too), to
 * five levels. The caller's objects are never changed: what holds a secret is copied along its
 * path, and a record without one is returned as it is.
 *
 * Why not pino's `redact` option: with a wildcard path (`*.token`) pino runs its redactor on every
 * key of every record, and that redactor parses each of its paths again on every call. The parse
 * loop became hot enough at boot for V8 to optimise it in several threads, which on a first start
 * woke the optimising compiler (README, Performance: +7 MiB of idle RSS with the image's flags).
 * This walk is a set lookup a key.
 */
export function redactRecord<T extends object>(record: T): T {
  return scrub(record, 0) as T
}

/** Their lengths: a key of another length is not lowered (a string made for every key of every record). */
const ANY_CASE_LENGTHS: ReadonlySet<number> = new Set([...ANY_CASE].map((k) => k.length))

const isSecret = (key: string) =>
  SECRET_KEYS.has(key) || (ANY_CASE_LENGTHS.has(key.length) && ANY_CASE.has(key.toLowerCase()))

function scrub(value: unknown, depth: number): unknown {
  if (depth === DEPTH || value === null || typeof value !== 'object' || ArrayBuffer.isView(value))
    return value
  let copy: Record<PropertyKey, unknown> | undefined
  for (const key of Object.keys(value)) {
    const was = (value as Record<string, unknown>)[key]
    const now = isSecret(key) ? CENSOR : scrub(was, depth + 1)
    if (now === was) continue
    copy ??= shallowCopy(value)
    copy[key] = now
  }
  return copy ?? value
}

/**
 * A copy with the same prototype and own properties, each read through the original: an error's
 * `stack` is an accessor that answers only on the error it belongs to, and pino's error serializer
 * reads `message`, `stack` and `cause` (not enumerable) from the copy.
 */
function shallowCopy(value: object): Record<PropertyKey, unknown> {
  if (Array.isArray(value)) return value.slice() as unknown as Record<PropertyKey, unknown>
  const copy = Object.create(Object.getPrototypeOf(value)) as Record<PropertyKey, unknown>
  for (const key of Reflect.ownKeys(value)) {
    const { enumerable } = Object.getOwnPropertyDescriptor(value, key)!
    const v = (value as Record<PropertyKey, unknown>)[key]
    Object.defineProperty(copy, key, { value: v, enumerable, writable: true, configurable: true })
  }
  return copy
}
