/**
 * Header lines a request may carry (Node's default is 2,000): past it, Node's parser answers 431.
 * Each line held while a request's headers trickle in costs two strings: at 2,000 a connection
 * cost up to ~140 KB of heap, and a few hundred slow clients ended a health check's thread.
 */
export const MAX_HEADER_LINES = 100

/** What one connection may hold of a worker's heap besides a body: its objects and its headers. */
const CONNECTION_BYTES = 36 * 1024

/** The share of a worker's heap its connections may hold together; the rest is the service's. */
export const HEAP_SHARE = 0.5

/**
 * The most connections a server holds at once: HTTP_MAX_CONNECTIONS (0: no limit), and no more
 * than half the worker's heap holds at what each may take (CONNECTION_BYTES, and the body its
 * handler reads into memory, as text and as the chunks it came in). Descriptors bound the first;
 * the heap, the second: a 32 MiB health check held 4,096 connections' descriptors, not their
 * headers.
 */
export function connectionCap(configured: number, heldBodyBytes: number, heapLimitBytes: number): number {
  const byHeap = Math.max(
    1,
    Math.floor((heapLimitBytes * HEAP_SHARE) / (CONNECTION_BYTES + 2 * heldBodyBytes)),
  )
  return configured > 0 ? Math.min(configured, byHeap) : byHeap
}
