import { codedError } from '../errors.js'

/** One entry of TARGET_DOMAIN_ROLES, `<domain>:role.<role>`. */
export interface Target {
  domain: string
  role: string
}

/**
 * Athenz names: segments of `[a-zA-Z0-9_][a-zA-Z0-9_-]*` joined by dots, for domains and roles
 * alike. Both end up in file names (role certificates, token files), so nothing else passes:
 * no slash, no `..`, no empty segment.
 */
const ATHENZ_NAME = /^[a-zA-Z0-9_][a-zA-Z0-9_-]*(?:\.[a-zA-Z0-9_][a-zA-Z0-9_-]*)*$/

export function isAthenzName(name: string): boolean {
  return ATHENZ_NAME.test(name)
}

export function parseTargets(list: readonly string[]): Target[] {
  return list.map((entry) => {
    const at = entry.indexOf(':role.')
    const domain = entry.slice(0, at)
    const role = entry.slice(at + ':role.'.length)
    if (at <= 0 || role === '') {
      throw codedError('ERR_CONFIG', `invalid entry "${entry}": expected <domain>:role.<role>`)
    }
    if (!isAthenzName(domain)) {
      throw codedError(
        'ERR_CONFIG',
        `invalid entry "${entry}": the domain is not an Athenz name (segments of [a-zA-Z0-9_][a-zA-Z0-9_-]* joined by ".")`,
      )
    }
    if (!isAthenzName(role)) {
      throw codedError(
        'ERR_CONFIG',
        `invalid entry "${entry}": the role is not an Athenz name (segments of [a-zA-Z0-9_][a-zA-Z0-9_-]* joined by ".")`,
      )
    }
    return { domain, role }
  })
}
