// `npm run build`, after tsc: each thread's entry in dist/ becomes one file with what it imports
// (every other file tsc made stays, for the tests).
//
// Why: seven threads load their modules at once at boot, and each module costs a thread its own
// resolution (package.json reads, realpath), read, compile and link, and its source in the heap.
// One file a thread, whitespace and syntax minified (names kept, so stack traces name their
// functions): time to ready -20%, idle RSS -14 MiB on Node 26 (README, Performance).
//
// - supervisor/cli.js stays as tsc made it: it installs the signal handlers before anything large
//   is even parsed, then imports supervisor/main.js, which is bundled over tsc's file.
// - Each worker is spawned by file path from `workers/<service>/main.cjs`, a CommonJS bundle beside
//   tsc's main.js: a worker whose entry is an ES module first builds Node's ES module loader
//   (~10 internal modules compiled in every isolate) and a facade per built-in it imports; the
//   CommonJS loader is already in the isolate's snapshot. Measured against ES module bundles,
//   interleaved starts: time to ready -17 to -22 ms, CPU to ready -40 ms, idle RSS -1 MiB.
// - The CSR task (piscina starts it by path) is bundled over tsc's file, as an ES module.
// - A path that inlined code computes from import.meta.url is relative to its entry's folder:
//   those paths either name a package (createRequire), or come from a module in its entry's own
//   folder (supervisor/, workers/certificate/), but for csr-pool.ts's, which starts from dist/ for
//   that reason. In the CommonJS bundles import.meta.url is the bundle's own file URL.
// - piscina is bundled on its own (below), beside the worker file it starts by path.
// - No code splitting: a chunk would live in another folder, and import.meta.url with it. Lazy
//   imports are inlined but still evaluated only when first imported; the large ones a thread
//   rarely needs are files of their own, loaded by path (node-forge in the CSR task, ioredis).
// - Linked source maps chain to tsc's, so NODE_OPTIONS=--enable-source-maps gives TypeScript
//   file:line in stack traces.
import { readdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { build } from 'esbuild'

const require = createRequire(import.meta.url)

const dist = new URL('../dist/', import.meta.url).pathname
const stubs = new URL('./bundle-stubs/', import.meta.url).pathname

/**
 * Three modules of dependencies replaced by what this project uses of them (scripts/bundle-stubs/):
 * pino's transport support, which requires thread-stream, `module` and `assert` when pino loads
 * though no transport is ever started here (idle RSS -1.8 MiB over seven threads: README, "Memory,
 * session 15"); sonic-boom's node:assert, for its one check; and @pinojs/redact, which pino
 * requires when it loads though the logger redacts its records itself (shared/log-redact.ts).
 */
const stubDependencies = {
  name: 'stub-dependencies',
  setup(build) {
    build.onResolve({ filter: /^\.\.?\/(lib\/)?transport$/ }, ({ importer }) =>
      /node_modules\/pino\/(pino\.js|lib\/tools\.js)$/.test(importer)
        ? { path: `${stubs}pino-transport.cjs` }
        : undefined,
    )
    build.onResolve({ filter: /^assert$/ }, ({ importer }) =>
      /node_modules\/sonic-boom\/index\.js$/.test(importer) ? { path: `${stubs}assert.cjs` } : undefined,
    )
    build.onResolve({ filter: /^@pinojs\/redact$/ }, ({ importer }) =>
      /node_modules\/pino\/lib\/redaction\.js$/.test(importer)
        ? { path: `${stubs}pino-redact.cjs` }
        : undefined,
    )
  },
}

const common = {
  bundle: true,
  platform: 'node',
  target: 'node22',
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  sourcemap: 'linked',
  logLevel: 'warning',
  plugins: [stubDependencies],
}
// CommonJS output: import.meta.url as the bundle's own file URL. The banner comes first in the file,
// so it carries the strict mode the ES modules were written for.
const commonjs = {
  ...common,
  format: 'cjs',
  define: { 'import.meta.url': '__filename_url' },
  banner: { js: "'use strict'; const __filename_url = require('node:url').pathToFileURL(__filename).href;" },
}

await build({
  ...common,
  entryPoints: ['supervisor/main.js', 'shared/identity/csr-task.js'].map((entry) => dist + entry),
  outdir: dist,
  outbase: dist,
  allowOverwrite: true,
  format: 'esm',
  // The CommonJS dependencies (pino, prom-client's files) call require().
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
})

// Beside the workers, the gateway's Redis client with ioredis, required by path only when Redis is
// configured (workers/gateway/main.ts): inlined, its source would be 40% of the gateway's bundle.
await build({
  ...commonjs,
  entryPoints: [
    ...readdirSync(`${dist}workers`).map((service) => `${dist}workers/${service}/main.js`),
    `${dist}workers/gateway/redis-client.js`,
  ],
  outdir: dist,
  outbase: dist,
  outExtension: { '.js': '.cjs' },
})

// The configuration loader, as one CommonJS file the supervisor requires for a call and then drops
// from the module cache (supervisor/load-config.ts): an ES module would stay loaded for the run.
await build({
  ...commonjs,
  entryPoints: [`${dist}shared/config/load.js`],
  outfile: `${dist}shared/config/loader.cjs`,
})

// piscina as two CommonJS files of its own, `index.cjs` and the `worker.js` it starts by path from
// its own folder, loaded by path with the first CSR (shared/identity/csr-pool.ts). From
// node_modules, piscina is 15 modules resolved, read and compiled in the certificate thread and 7
// more in each pool thread: on a first start those resolutions made node:path's loops hot enough
// for V8 to optimise them (README, Performance). The folder's package.json makes `worker.js`
// CommonJS under this package's "type": "module".
const piscinaDir = `${dist}shared/identity/piscina/`
// @napi-rs/nice is piscina's optional dependency, required only for a pool with `niceIncrement`.
const piscinaBuild = { ...common, format: 'cjs', external: ['@napi-rs/nice'] }
await build({ ...piscinaBuild, entryPoints: [require.resolve('piscina')], outfile: `${piscinaDir}index.cjs` })
await build({
  ...piscinaBuild,
  entryPoints: [`${dirname(require.resolve('piscina'))}/worker.js`],
  outfile: `${piscinaDir}worker.js`,
})
writeFileSync(`${piscinaDir}package.json`, '{ "type": "commonjs" }\n')
