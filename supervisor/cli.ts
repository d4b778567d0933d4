#!/usr/bin/env node
// The signal policy comes before anything else loads: a SIGTERM during boot ends in a logged exit.
import { installSignalHandlers } from './signals.js'

const signals = installSignalHandlers()
const { main } = await import('./main.js')
main(signals)
