import { readFile } from 'node:fs/promises'

/**
 * What every in-cluster Kubernetes client reads: the API server from KUBERNETES_SERVICE_HOST and
 * _PORT, and the service account's files. Shared by the gateway's kubernetes sink and the
 * certificate backup to a Secret.
 */
export function inClusterApi(): string {
  const host = process.env.KUBERNETES_SERVICE_HOST
  if (!host) return ''
  const port = process.env.KUBERNETES_SERVICE_PORT || '443'
  return `https://${host.includes(':') ? `[${host}]` : host}:${port}`
}

/** A file's text, or undefined when the path is empty or the file does not exist. */
export async function readOptional(path: string): Promise<string | undefined> {
  if (!path) return undefined
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}
