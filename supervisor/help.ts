import { envName, flagName, SETTINGS, type SettingKey, type SettingSpec } from '../shared/config/settings.js'
import { formatDuration } from '../shared/duration.js'

export function helpText(version: string): string {
  const rows = (Object.keys(SETTINGS) as SettingKey[]).map((key) => {
    const spec: SettingSpec = SETTINGS[key]
    const def = spec.default === '' ? '' : ` (default ${spec.default})`
    return `  --${flagName(key).padEnd(30)} ${envName(key).padEnd(30)} ${spec.help}${def}`
  })
  return [
    `sia-supervisor ${version}: identity and alerting sidecar, one worker thread per service`,
    '',
    'Usage: sia-supervisor [--config FILE] [--<setting> VALUE ...]',
    '',
    'Precedence: flags > environment > config file (JSON or YAML, also SIA_CONFIG_FILE) > defaults.',
    `Durations use Go syntax: ${['30s', '1m30s', '24h'].join(', ')} (0 alone is ${formatDuration(0)}).`,
    'An empty address disables that service.',
    '',
    '  flag                             environment                    meaning',
    ...rows,
    '  --config FILE                    SIA_CONFIG_FILE                settings and per-service tuning (services.<name>)',
    '  --help, --version',
    '',
    'Exit codes: 0 clean shutdown on a signal; 1 start failure, crash loop or missed shutdown deadline;',
    '            2 invalid configuration (nothing started).',
  ].join('\n')
}
