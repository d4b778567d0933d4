#!/usr/bin/env node
// The signal policy comes before anything else loads: a SIGTERM during boot ends in a logged exit.
import { installSignalHandlers } from './signals.js'

const signals = installSignalHandlers()
await import('../shared/compile-cache.js') // before the rest loads, so it is read from the cache
// The service threads boot while this one loads the supervisor and the configuration.
const { prespawnWorkers } = await import('./prespawn.js')
const prespawned = prespawnWorkers()
const { main } = await import('./main.js')
await main(signals, prespawned)
