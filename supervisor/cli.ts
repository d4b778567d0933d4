#!/usr/bin/env node
// The signal policy comes before anything else loads: a SIGTERM during boot ends in a logged exit.
import { installSignalHandlers } from './signals.js'

const signals = installSignalHandlers()
await import('../shared/compile-cache.js') // before the rest loads, so it is read from the cache
// The configuration loads on its own thread while this one loads the supervisor's modules.
const { loadConfigOffThread } = await import('./load-config.js')
const invocation = loadConfigOffThread(process.argv.slice(2), process.env)
invocation.catch(() => {}) // main() reports it
const { main } = await import('./main.js')
await main(signals, invocation)
