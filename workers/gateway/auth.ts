import { createHash, timingSafeEqual } from 'node:crypto'

/**
 * Bearer check in constant time: both sides are hashed first, so neither the length nor the
 * content of the expected token leaks through timing.
 */
export function bearerChecker(expected: string): (authorization: string | undefined) => boolean {
  const want = digest(expected)
  return (authorization) => {
    const m = /^Bearer[ \t]+(.+)$/i.exec(authorization ?? '')
    const ok = timingSafeEqual(digest(m?.[1]?.trim() ?? ''), want)
    return ok && m !== null
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest()
}
