import { codedError } from './errors.js'

export interface ListenAddress {
  /** undefined: every interface, as Go's ":8080". */
  host: string | undefined
  port: number
}

/** Parses "host:port", ":port" or "[v6]:port". The empty string (service disabled) is handled by callers. */
export function parseAddress(text: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text)
  const port = m ? Number(m[3]) : Number.NaN
  if (!m || port > 65535) {
    throw codedError('ERR_ADDRESS', `invalid address "${text}" (expected host:port, :port or [ipv6]:port)`)
  }
  const host = m[1] ?? m[2]
  return { host: host === '' ? undefined : host, port }
}
