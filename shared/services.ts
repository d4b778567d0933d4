/** The services in start order (DESIGN.md §1). Shutdown runs this list backwards. */
export const SERVICES = [
  'certificate',
  'token',
  'memory-reporter',
  'gateway',
  'metrics',
  'healthcheck',
] as const

export type ServiceName = (typeof SERVICES)[number]

export function isServiceName(name: string): name is ServiceName {
  return (SERVICES as readonly string[]).includes(name)
}
