// `npm run build`, after tsc: each thread's entry in dist/ becomes one file with what it imports,
// written over the entry tsc made (every other file tsc made stays, for the tests).
//
// Why: seven threads load their modules at once at boot, and each module costs a thread its own
// resolution (package.json reads, realpath), read, compile and link, and its source in the heap.
// One file a thread, whitespace and syntax minified (names kept, so stack traces name their
// functions): time to ready -20%, idle RSS -14 MiB on Node 26 (README, Performance).
//
// - supervisor/cli.js stays as tsc made it: it installs the signal handlers before anything large
//   is even parsed, then imports supervisor/main.js, which is bundled.
// - Workers and the CSR task are spawned by file path, so each is an entry, written where tsc put it. A path that inlined code computes from import.meta.url is
//   then relative to its entry's folder: those paths either name a package (createRequire), or
//   come from a module in its entry's own folder (supervisor/, workers/certificate/), but for
//   csr-pool.ts's, which starts from dist/ for that reason.
// - piscina stays outside: it starts its own worker file by path.
// - No code splitting: a chunk would live in another folder, and import.meta.url with it. Lazy
//   imports (ioredis, node-forge) are inlined but still evaluated only when first imported.
// - Linked source maps chain to tsc's, so NODE_OPTIONS=--enable-source-maps gives TypeScript
//   file:line in stack traces.
import { readdirSync } from 'node:fs'
import { build } from 'esbuild'

const dist = new URL('../dist/', import.meta.url).pathname
const workers = readdirSync(`${dist}workers`).map((service) => `workers/${service}/main.js`)
const common = {
  bundle: true,
  platform: 'node',
  target: 'node22',
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  logLevel: 'warning',
}
const entryPoints = ['supervisor/main.js', ...workers, 'shared/identity/csr-task.js'].map(
  (entry) => dist + entry,
)

await build({
  entryPoints,
  outdir: dist,
  outbase: dist,
  allowOverwrite: true,
  ...common,
  format: 'esm',
  external: ['piscina'],
  sourcemap: 'linked',
  // The CommonJS dependencies (pino, ioredis, prom-client's files) call require().
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
})

// The configuration loader, as one CommonJS file the supervisor requires for a call and then drops
// from the module cache (supervisor/load-config.ts): an ES module would stay loaded for the run.
await build({
  ...common,
  entryPoints: [`${dist}shared/config/load.js`],
  outfile: `${dist}shared/config/loader.cjs`,
  format: 'cjs',
  sourcemap: 'linked',
  // Its one use of import.meta.url (the YAML parser's require) is relative to its own file.
  define: { 'import.meta.url': '__filename_url' },
  banner: { js: "const __filename_url = require('node:url').pathToFileURL(__filename).href;" },
})
