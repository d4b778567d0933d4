'use strict'
// pino's `transport()` in the bundles (scripts/bundle.mjs): the sidecar's logger writes to a
// synchronous destination and never starts a transport, and pino's transport module requires
// thread-stream (and through it `module` and `assert`) in every thread that loads pino.
module.exports = function transport() {
  const err = new Error('pino transports are not part of this build: the logger writes to a destination')
  err.code = 'ERR_PINO_TRANSPORT'
  throw err
}
