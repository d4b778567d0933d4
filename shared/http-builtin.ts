/**
 * `node:http`'s createServer, as a CommonJS object (see builtins.ts), in a file of its own: only
 * the threads that serve import it. http and net are ~20 internal modules, ~0.3 MiB of heap and
 * ~2 ms of CPU in each thread that loads them (the certificate and memory-reporter threads do not).
 */
export const { createServer } = process.getBuiltinModule('node:http')
