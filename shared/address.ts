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
  if (host !== '' && !validHost(host!, m[1] !== undefined)) {
    throw codedError(
      'ERR_ADDRESS',
      `invalid address "${text}": "${host}" is neither an IP address nor a host name`,
    )
  }
  return { host: host === '' ? undefined : host, port }
}

// DNS labels, and the underscores /etc/hosts and getaddrinfo take as well.
const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/

/**
 * An IP literal ([v6] bracketed), or a host name of DNS labels: what listen() can resolve, so
 * that "999.1.1.1" or one with a space is a configuration error, not a start that fails.
 */
function validHost(host: string, bracketed: boolean): boolean {
  const { isIP } = process.getBuiltinModule('node:net')
  if (bracketed) return isIP(host) === 6
  if (/^[\d.]+$/.test(host)) return isIP(host) === 4
  const name = host.endsWith('.') ? host.slice(0, -1) : host // a fully qualified name's root
  return name.length <= 253 && name.split('.').every((label) => LABEL.test(label))
}
