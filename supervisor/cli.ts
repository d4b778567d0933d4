#!/usr/bin/env node
// The signal policy comes before anything else loads: a SIGTERM during boot ends in a logged exit.
import { installSignalHandlers } from './signals.js'

const signals = installSignalHandlers()
await import('../shared/compile-cache.js') // before the rest loads, so it is read from the cache
const { main } = await import('./main.js')
await main(signals)
