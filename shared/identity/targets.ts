import { codedError } from '../errors.js'

/** One entry of TARGET_DOMAIN_ROLES, `<domain>:role.<role>`. */
export interface Target {
  domain: string
  role: string
}

export function parseTargets(list: readonly string[]): Target[] {
  return list.map((entry) => {
    const at = entry.indexOf(':role.')
    const domain = entry.slice(0, at)
    const role = entry.slice(at + ':role.'.length)
    if (at <= 0 || role === '') {
      throw codedError('ERR_CONFIG', `invalid entry "${entry}": expected <domain>:role.<role>`)
    }
    return { domain, role }
  })
}
