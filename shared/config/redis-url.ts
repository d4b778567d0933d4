import { codedError } from '../errors.js'

export interface RedisNode {
  host: string
  port: number
}

interface Auth {
  username?: string
  password?: string
  tls: boolean
}

/** What REDIS_URL names: one server, a Sentinel-monitored master, or a Cluster. */
export type RedisTarget =
  | { mode: 'standalone'; url: string }
  | ({ mode: 'sentinel'; sentinels: RedisNode[]; name: string; db: number } & Auth)
  | ({ mode: 'cluster'; nodes: RedisNode[] } & Auth)

const DEFAULT_PORT = { sentinel: 26379, cluster: 6379 } as const

/** The query options of a `redis://` URL that ioredis takes as they come, and their values. */
const QUERY_OPTIONS: Record<string, (value: string) => boolean> = {
  db: (v) => /^\d+$/.test(v),
  family: (v) => v === '4' || v === '6',
  username: () => true,
  password: () => true,
  connectionName: (v) => v !== '',
  keyPrefix: () => true,
  // A TLS profile's name, or `true`: any other string would turn TLS on as well.
  tls: (v) => v !== '' && v !== 'false' && v !== '0',
}

/**
 * Parses REDIS_URL. `redis://` and `rediss://` go to ioredis as they are; the HA forms list several
 * hosts, which WHATWG URL cannot parse:
 *   redis+sentinel://[[user]:pass@]host[:port][,host[:port]...]/<master name>[/<db>]
 *   redis+cluster://[[user]:pass@]host[:port][,host[:port]...]
 * (`rediss+sentinel`, `rediss+cluster`: TLS). The password is the master's (or every node's).
 * Errors never quote the URL: it may carry a password.
 */
export function parseRedisUrl(raw: string): RedisTarget {
  const scheme = /^([a-z+]+):\/\//i.exec(raw)?.[1]?.toLowerCase()
  switch (scheme) {
    case 'redis':
    case 'rediss':
      return standalone(raw)
    case 'redis+sentinel':
    case 'rediss+sentinel':
    case 'redis+cluster':
    case 'rediss+cluster':
      return multiHost(raw.slice(scheme.length + 3), scheme)
    default:
      throw invalid('the scheme must be redis, rediss, redis+sentinel or redis+cluster (rediss+… for TLS)')
  }
}

function standalone(raw: string): RedisTarget {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw invalid('not a valid URL')
  }
  if (!url.hostname) throw invalid('no host')
  // ioredis would decode these itself, and a bad escape would surface as a failed login later.
  decode(url.username)
  decode(url.password)
  if (!/^(?:\/\d*)?$/.test(url.pathname)) throw invalid('the path is /<db number>')
  // ioredis passes query options on as strings (but for db and family): `?connectTimeout=5000`
  // ended the gateway's thread at connect (a number was expected) rather than failing here, and
  // `?tls=false` would be a string, so true. The string options are taken as they are.
  for (const [key, value] of url.searchParams) {
    const check = QUERY_OPTIONS[key]
    if (!check) {
      throw invalid(`query option "${key}" is not supported (${Object.keys(QUERY_OPTIONS).join(', ')})`)
    }
    if (!check(value)) throw invalid(`query option "${key}" has an invalid value`)
  }
  return { mode: 'standalone', url: raw }
}

function multiHost(rest: string, scheme: string): RedisTarget {
  const at = rest.lastIndexOf('@')
  const auth: Auth = { ...credentials(at < 0 ? '' : rest.slice(0, at)), tls: scheme.startsWith('rediss') }
  const [hostList = '', ...path] = rest.slice(at + 1).split('/')
  if (hostList.includes('?')) throw invalid('query options are not supported in this form')
  const kind = scheme.endsWith('sentinel') ? 'sentinel' : 'cluster'
  const nodes = hostList.split(',').map((h) => node(h, DEFAULT_PORT[kind]))
  if (kind === 'cluster') {
    if (path.some(Boolean)) throw invalid('a cluster URL has no path (a cluster has only database 0)')
    return { mode: 'cluster', nodes, ...auth }
  }
  const [name, db = '0', ...extra] = path
  if (!name) throw invalid('a sentinel URL names the master: redis+sentinel://host:26379/<name>')
  if (!/^\d+$/.test(db) || extra.length > 0) throw invalid('the path is /<master name>[/<db number>]')
  return { mode: 'sentinel', sentinels: nodes, name: decode(name), db: Number(db), ...auth }
}

function credentials(userinfo: string): Omit<Auth, 'tls'> {
  // As ioredis reads `redis://` URLs: `user@`, `user:pass@`, or `:pass@` (no ACL user).
  const colon = userinfo.indexOf(':')
  const username = decode(colon < 0 ? userinfo : userinfo.slice(0, colon))
  const password = colon < 0 ? '' : decode(userinfo.slice(colon + 1))
  return { ...(username && { username }), ...(password && { password }) }
}

function node(spec: string, defaultPort: number): RedisNode {
  const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d+))?$/i.exec(spec)
  if (!m?.[1]) throw invalid('each host is host[:port], separated by commas')
  const port = m[2] === undefined ? defaultPort : Number(m[2])
  if (port < 1 || port > 65535) throw invalid('a port is 1-65535')
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port }
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    throw invalid('bad percent-encoding')
  }
}

function invalid(reason: string) {
  return codedError('ERR_CONFIG', reason)
}
