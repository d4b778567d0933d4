/**
 * A worker's last word before an uncaught exception ends it (DESIGN.md §8): it tells the
 * supervisor, then blocks until the supervisor has taken over its listening port (or a short
 * deadline passes). Only then does the thread end and close its socket, so a crash under load
 * refuses no connection. One Int32 of shared memory per thread: 0 while waiting, 1 once released.
 */

/** How long a dying worker waits for the hold: a bound, never a reason to live on. */
export const DEATH_NOTICE_WAIT_MS = 250

export function createDeathNotice(): SharedArrayBuffer {
  return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT)
}

/** Worker side: announce (through `tell`), then wait for the release. */
export function announceDeath(notice: SharedArrayBuffer, tell: () => void): void {
  const cell = new Int32Array(notice)
  tell()
  Atomics.wait(cell, 0, 0, DEATH_NOTICE_WAIT_MS)
}

/** Supervisor side: the port is held (or will not be); the worker may end. */
export function releaseDeath(notice: SharedArrayBuffer): void {
  const cell = new Int32Array(notice)
  Atomics.store(cell, 0, 1)
  Atomics.notify(cell, 0)
}
