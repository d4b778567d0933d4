/**
 * Milliseconds on the process's monotonic clock (CLOCK_MONOTONIC, through `process.hrtime`): the
 * same in every thread of the process, and never stepped, where the wall clock (`Date.now()`) moves
 * with an NTP step or a VM's resume. Heartbeats, watchdogs, deadlines and the shutdown budget are
 * measured on it: a step of the wall clock must not read as a worker gone silent, nor eat the
 * budget. Only for differences; a time shown to people stays `Date.now()`.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6
}
