import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

/**
 * The image's ENTRYPOINT (its init and node's flags), read from the Dockerfile, so that the container test
 * and the bench start the CLI the way the container does (the other tests run it as `npm start`
 * does: `node dist/supervisor/cli.js`). A flag the running Node does not know (the image
 * runs Node 26; the suite also runs on 22) is left out: that Node would refuse to start.
 */
function entrypointOf(): { init: string[]; flags: string[] } {
  const dockerfile = readFileSync(new URL('../../../Dockerfile', import.meta.url), 'utf8')
  const line = dockerfile.split('\n').find((l) => l.startsWith('ENTRYPOINT '))
  if (!line) throw new Error('the Dockerfile has no ENTRYPOINT')
  const argv = JSON.parse(line.slice('ENTRYPOINT '.length)) as string[]
  const node = argv.indexOf('node')
  if (node < 0 || argv.at(-1) !== 'dist/supervisor/cli.js') {
    throw new Error(`unexpected ENTRYPOINT: ${line}`)
  }
  return { init: argv.slice(0, node), flags: argv.slice(node + 1, -1) }
}

const entrypoint = entrypointOf()

const accepted = (flag: string) => spawnSync(process.execPath, [flag, '-e', '0']).status === 0

/** What the ENTRYPOINT runs node under (an init as PID 1): `['tini', '--']`. */
export const ENTRYPOINT_INIT: readonly string[] = entrypoint.init

/** The ENTRYPOINT's node flags as the Dockerfile writes them. */
export const ENTRYPOINT_NODE_FLAGS: readonly string[] = entrypoint.flags

export const IMAGE_NODE_FLAGS: readonly string[] = ENTRYPOINT_NODE_FLAGS.filter(accepted)
