'use strict'
// @pinojs/redact in the bundles (scripts/bundle.mjs): pino's redaction module requires it when pino
// loads, but the sidecar's logger redacts its records itself (shared/log-redact.ts) and never
// passes pino a `redact` option.
module.exports = function redact() {
  const err = new Error(
    "pino's redact option is not part of this build: records are redacted by shared/log-redact.ts",
  )
  err.code = 'ERR_PINO_REDACT'
  throw err
}
