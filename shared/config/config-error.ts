import { codedError } from '../errors.js'

/** ERR_CONFIG naming `setting` (as the operator wrote it: a flag, a variable, a file's key). */
export function configError(setting: string, reason: string) {
  const err = codedError('ERR_CONFIG', `invalid setting ${setting}: ${reason}`)
  return Object.assign(err, { setting })
}
