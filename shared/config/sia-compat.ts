/**
 * k8s-athenz-sia settings this sidecar does not implement. A drop-in user who sets one must hear
 * that it has no effect, rather than find out when the backup it configured is not there.
 */
const UNSUPPORTED: Record<string, string> = {
  BACKUP: 'certificate backup to a Kubernetes secret is not implemented',
  CERT_SECRET: 'certificate backup to a Kubernetes secret is not implemented',
  NAMESPACE: 'set ATHENZ_DOMAIN instead of deriving it from the namespace',
  ATHENZ_PREFIX: 'set ATHENZ_DOMAIN instead of deriving it from the namespace',
  ATHENZ_SUFFIX: 'set ATHENZ_DOMAIN instead of deriving it from the namespace',
  LOG_DIR: 'logs go to stdout as JSON lines',
  ROLE_CERT_NAMING_FORMAT: 'use ROLECERT_DIR and ROLE_CERT_FILENAME_DELIMITER',
}

export function unsupportedSiaSettings(env: NodeJS.ProcessEnv): { setting: string; reason: string }[] {
  return Object.entries(UNSUPPORTED)
    .filter(([name]) => env[name] !== undefined && env[name] !== '')
    .map(([setting, reason]) => ({ setting, reason }))
}
