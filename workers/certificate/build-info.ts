import { readFileSync, statSync } from '../../shared/builtins.js'
import { Gauge, type Registry } from '../../shared/prom.js'

/**
 * SIA's `sidecar_build_info{app_name,version,built}` (always 1): the package's name and version,
 * and when this build was made (the compiled CLI's modification time, which the image build sets).
 */
export function registerBuildInfo(registry: Registry): void {
  const pkg = new URL('../../../package.json', import.meta.url)
  const { name, version } = JSON.parse(readFileSync(pkg, 'utf8')) as { name: string; version: string }
  let built = ''
  try {
    built = statSync(new URL('../../supervisor/cli.js', import.meta.url)).mtime.toISOString()
  } catch {}
  new Gauge({
    name: 'sidecar_build_info',
    help: 'Build of the sidecar: app name, version and build time (always 1)',
    labelNames: ['app_name', 'version', 'built'],
    registers: [registry],
  }).set({ app_name: name, version, built }, 1)
}
