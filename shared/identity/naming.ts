import { dirname, join } from 'node:path'
import type { Config } from '../config/types.js'
import { providerKind } from './provider.js'
import { parseTargets, type Target } from './targets.js'

/**
 * SIA's file naming templates (ROLE_CERT_NAMING_FORMAT, ROLE_CERT_KEY_NAMING_FORMAT,
 * ACCESS_TOKEN_NAMING_FORMAT, ROLE_TOKEN_NAMING_FORMAT): a path with `{{domain}}`, `{{role}}` and
 * `{{delimiter}}`. Domain and role are validated Athenz names (no `/`, no `..` segment), so a
 * rendered path stays where the operator's template puts it.
 */
const PLACEHOLDER = /\{\{\s*([^}]*?)\s*\}\}/g
const KNOWN = new Set(['domain', 'role', 'delimiter'])

/** Throws naming the first unknown placeholder (a typo such as `{{Domain}}` would end up literally in the path). */
export function checkTemplate(template: string): void {
  for (const m of template.matchAll(PLACEHOLDER)) {
    if (!KNOWN.has(m[1]!)) {
      throw new Error(`unknown placeholder "${m[0]}" (known: {{domain}}, {{role}}, {{delimiter}})`)
    }
  }
  if (/\{\{|\}\}/.test(template.replace(PLACEHOLDER, ''))) throw new Error('an unbalanced "{{" or "}}"')
  if (template.includes('\0')) throw new Error('a NUL character')
}

export function renderTemplate(template: string, t: Target, delimiter: string): string {
  return template.replace(PLACEHOLDER, (_m, name: string) =>
    name === 'domain' ? t.domain : name === 'role' ? t.role : delimiter,
  )
}

const BASE = '{{domain}}{{delimiter}}{{role}}'

/** The template of role certificate files (`cert`) or their keys (`key`). */
export function roleCertTemplate(config: Config, ext: 'cert' | 'key'): string {
  if (ext === 'cert') return config.roleCertNamingFormat || join(config.roleCertDir, `${BASE}.cert.pem`)
  if (config.roleCertKeyNamingFormat) return config.roleCertKeyNamingFormat
  // Beside the role certificates: their template's directory, SIA's name.
  return join(dirname(roleCertTemplate(config, 'cert')), `${BASE}.key.pem`)
}

/** `<ROLECERT_DIR>/<domain><delimiter><role>.cert.pem` by default, as the original names it. */
export function roleCertPath(config: Config, t: Target, ext: 'cert' | 'key' = 'cert'): string {
  return renderTemplate(roleCertTemplate(config, ext), t, config.roleCertFilenameDelimiter)
}

export type TokenFileType = 'roletoken' | 'accesstoken'

/** The template of token files of `type`, or undefined when that type's files are not written. */
export function tokenTemplate(config: Config, type: TokenFileType): string | undefined {
  const format = type === 'accesstoken' ? config.accessTokenNamingFormat : config.roleTokenNamingFormat
  if (format) return format
  return config.tokenDir ? join(config.tokenDir, `${BASE}.${type}`) : undefined
}

/** Token files of the targets: `TOKEN_DIR/<domain><delimiter><role>.<type>` by default. */
export function tokenFilePath(config: Config, t: Target, type: TokenFileType): string | undefined {
  const template = tokenTemplate(config, type)
  if (template === undefined) return undefined
  const delimiter =
    type === 'accesstoken' ? config.accessTokenFilenameDelimiter : config.roleTokenFilenameDelimiter
  return renderTemplate(template, t, delimiter)
}

/**
 * What the certificate service writes: the key, certificate and CA files (not with the files
 * provider: a third party's, only read here) and each target's role certificate, with its key
 * file under ROLE_CERT_KEY_FILE_OUTPUT.
 */
export function certificateOutputs(config: Config): string[] {
  const own =
    providerKind(config) === 'files' ? [] : [...config.keyFiles, ...config.certFiles, config.caCertFile]
  return [...own, ...roleCertOutputs(config)]
}

/** Each target's role certificate, with its key file under ROLE_CERT_KEY_FILE_OUTPUT. */
export function roleCertOutputs(config: Config): string[] {
  return parseTargets(config.targetDomainRoles).flatMap((t) => [
    roleCertPath(config, t),
    ...(config.roleCertKeyFileOutput ? [roleCertPath(config, t, 'key')] : []),
  ])
}

/** What the token service may write: each target's token file of either type. */
export function tokenOutputs(config: Config): string[] {
  return parseTargets(config.targetDomainRoles).flatMap((t) =>
    (['roletoken', 'accesstoken'] as const).flatMap((type) => tokenFilePath(config, t, type) ?? []),
  )
}
