/**
 * k8s-athenz-sia settings this sidecar does not implement. A drop-in user who sets one must hear
 * that it has no effect, rather than find out when the backup it configured is not there.
 */
const UNSUPPORTED: Record<string, string> = {
  LOG_DIR: 'logs go to stdout as JSON lines',
}

export function unsupportedSiaSettings(env: NodeJS.ProcessEnv): { setting: string; reason: string }[] {
  return Object.entries(UNSUPPORTED)
    .filter(([name]) => env[name] !== undefined && env[name] !== '')
    .map(([setting, reason]) => ({ setting, reason }))
}
