'use strict'
// `assert(value, message)` for sonic-boom in the bundles (scripts/bundle.mjs): its one check
// (a destination's descriptor is a number when it closes), without node:assert and the diff and
// error modules it loads in every thread.
module.exports = function assert(value, message) {
  if (value) return
  const err = new Error(message)
  err.code = 'ERR_ASSERTION'
  throw err
}
