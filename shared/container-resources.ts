/**
 * The container's memory, as deploy/kubernetes asks for it: numbers from measurement, not from a
 * setting, kept here so that test/deploy-kubernetes.test.ts can hold the manifests (and the
 * SiaSidecarMemoryNearLimit rule) to them, and check a running sidecar against them.
 *
 * Measured on Node 26.10 (2 cores, this repository's bench machine), RSS of the whole process:
 * - idle, six services, local authority, 3–10 s after ready: 184 MiB (Node 22.23: 178–184 MiB;
 *   208–217 MiB before the cuts of issue 14, which MEASURED_IDLE_RSS_MB still allows for); on
 *   Node 26.12, 131 MiB 10 s after ready (the README's ~120–135 MiB, its bench's figure);
 *   the gateway's Deployment (Redis dedup, no token service): 200 MiB;
 * - under load (autocannon, 50 connections on the token server and 50 on the gateway for 15 s,
 *   /metrics scraped every second): peak (VmHWM) 348–363 MiB; with Redis, 321 MiB;
 * - the in-memory dedup store full (GATEWAY_DEDUP_MAX_ENTRIES 100000 fingerprints): 357 MiB.
 * Every worker has a default heap limit (shared/config/limits.ts, 548 MiB in all, old and young
 * generations, and 50 MiB for the CSR pool's two threads): their sum plus the non-heap share must stay under the container limit, so a leak
 * ends one thread (reason oom) rather than the whole pod (the test checks it).
 */
export const MEASURED_IDLE_RSS_MB = 230
export const MEASURED_PEAK_RSS_MB = 363

/** resources.requests.memory: the idle RSS with room for the first requests. */
export const DEFAULT_CONTAINER_MEMORY_REQUEST_MB = 256

/**
 * resources.limits.memory: the workers' heap limits plus the non-heap share (548 + 50 + 160 MiB), with room; it
 * is also more than twice the measured peak.
 */
export const DEFAULT_CONTAINER_MEMORY_MB = 768

/**
 * What the process holds besides the workers' V8 heaps (code, the main thread, each isolate's
 * non-heap memory): the idle RSS less the idle heaps (~60 MiB), rounded up.
 */
export const NON_HEAP_RSS_MB = 160
