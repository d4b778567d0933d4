import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { isMainThread, parentPort, workerData } from 'node:worker_threads'
import { monotonicMs } from './clock.js'
import type { Config } from './config/types.js'
import { announceDeath } from './death-notice.js'
import { codedError } from './errors.js'
import { createFailpoints, type HitFailpoint, parseFailpoints } from './failpoints.js'
import { heapVitals } from './heap-vitals.js'
import { serveTask } from './http-server.js'
import { createRepeatGate, REPEAT_WINDOW_MS, type RepeatGate } from './log-repeats.js'
import { createLogger, type Logger } from './logger.js'
import { type Collect, type Collection, idleCollection, registerLoopDelay } from './loop-delay.js'
import { createServicePorts, type ServicePorts } from './ports/service-ports.js'
import { Gauge, Registry } from './prom.js'
import { AWAIT_INIT, type SupervisorOps, type WorkerInit, type WorkerOps } from './protocol.js'
import { createRpc } from './rpc.js'
import type { ServiceName } from './services.js'
import { createStatusBoard, HEARTBEAT_MS, type StatusBoard } from './status-board.js'
import { createTaskGroup, type TaskBody } from './task-group.js'

/** Kept back from the supervisor's deadline so the ack still arrives before it terminates us. */
const ACK_MARGIN_MS = 250

/** What a cleanup is told of the stop it runs in. */
export interface StopInfo {
  /** Another worker of the service goes on (ShutdownRequest.replaced). */
  replaced: boolean
  /** When the shutdown's answer is due (shared/clock.ts): a cleanup that waits stops waiting then. */
  deadline: number
}

export interface ServeOptions {
  /**
   * What a handler reads into memory of a request's body at most (0: none, or under a budget of
   * its own), which bounds how many connections its heap holds.
   */
  heldBodyBytes?: number
  /**
   * Reached through a Kubernetes Service (the gateway), not on the pod itself: from the first
   * instant of shutdown its answers close their connections, so that a client's next request goes
   * through the Service to a pod that stays (a kept-alive connection is pinned to this one).
   */
  behindService?: boolean
}

export interface ServiceContext {
  service: ServiceName
  config: Config
  /**
   * Started to replace a worker of this service that still serves (a reload, a recycle): what
   * they share (a file being appended to) is that worker's until it has drained.
   */
  successor: boolean
  /** The configuration the service ran on before this thread's, when a reload changed it. */
  previous?: Config
  log: Logger
  /**
   * Where a record that repeats (every request failing the same way during an outage) is written
   * once a window, then counted. Its counts are written after the stop's last cleanup, and by a
   * thread dying of an uncaught exception before it ends.
   */
  repeats: RepeatGate
  /** This worker's registry; every series carries service="<name>". */
  registry: Registry
  /** The registry's series, for a Prometheus scrape or (`view`) a look that starts no new period. */
  collect: Collect
  /** The collection under way, for a metric's collect() (its deadline: shared/loop-delay.ts). */
  collection: Readonly<Collection>
  board: StatusBoard
  /**
   * Aborted when shutdown begins, or when the run is cancelled while this start is in flight: a
   * start's long waits (a boot fetch, a back-off) end early; tasks are still created.
   */
  signal: AbortSignal
  /** Creates a named task; only valid inside start(). */
  go(task: string, body: TaskBody, opts?: { waitReady?: boolean }): Promise<void>
  /** Creates a `task` that serves `server` on `address`; resolves once it is listening. */
  serve(task: string, server: Server, address: string, opts?: ServeOptions): Promise<AddressInfo>
  /**
   * Registers cleanup for something start() just created (a client, a pool, a subscription), as
   * Go's `defer`: at shutdown, once every task has stopped, these run in reverse order. Registered
   * as each resource appears, so a start that fails half-way still releases what it made.
   */
  onStop(fn: (stop: StopInfo) => Promise<void> | void): void
  /** Adds methods to the API this service answers to the others (DESIGN.md §9). */
  expose: ServicePorts['expose']
  /** A typed proxy to another service (or the supervisor): every call has a deadline. */
  connect: ServicePorts['connect']
  failpoint: HitFailpoint
}

export interface ServiceDefinition {
  /** Creates every task of the service, and registers their cleanup; resolves once each is up. */
  start(ctx: ServiceContext): Promise<void> | void
}

/** The entry of every worker file: `defineService({ start, stop })`. */
export function defineService(def: ServiceDefinition): void {
  if (isMainThread) throw codedError('ERR_NOT_A_WORKER', 'a service runs only inside its worker thread')
  // Started before the configuration was known (supervisor/prespawn.ts): the init is the first message.
  if (workerData === AWAIT_INIT) parentPort?.once('message', (init: WorkerInit) => serve(def, init))
  else serve(def, workerData as WorkerInit)
}

function serve(def: ServiceDefinition, init: WorkerInit): void {
  const { service, config } = init
  const board = createStatusBoard(init.board)
  const log = createLogger(service, config.logLevel, { logDir: config.logDir, stdout: init.stdout })
  const rpc = createRpc<SupervisorOps, WorkerOps>(init.control)
  const repeats = createRepeatGate(log, REPEAT_WINDOW_MS)
  const ports = createServicePorts(rpc, config.serviceCallTimeout, (type) =>
    repeats.log(
      'warn',
      { event: 'ports.call.refused', target: service },
      type,
      { type },
      `a caller sent ${service} a port message that is not a call of its methods: not run`,
    ),
  )
  // Observes, never handles: the exception still ends the thread, once its port is held.
  process.on('uncaughtExceptionMonitor', () => {
    try {
      repeats.flush() // counts of the window still open; the crash itself is the supervisor's to say
    } catch {
      // A logger that fails (its stream broken) is no reason to lose the death notice.
    }
    announceDeath(init.deathNotice, () => void rpc.request('dying', null, 1000).catch(() => {}))
  })

  let acknowledged = false
  /**
   * A successor writes nothing to its service's row until its start has succeeded: until then the
   * row is its predecessor's, which still serves (its heartbeat for liveness and the watchdog, its
   * heap, the gateway's degraded reasons). Written from the thread's start, a successor's beats hid
   * a predecessor whose loop had blocked, its heap figures alternated with the predecessor's, and
   * its reasons (a Redis not yet connected) made the service not ready while the other served.
   */
  let ownsRow = !init.successor
  /** Told to shut down: the row is never taken again (a start may still succeed after it). */
  let leaving = false
  let stopHeartbeat = () => {}
  const takeRow = () => {
    if (leaving) return
    ownsRow = true
    stopHeartbeat = startHeartbeat(service, board)
  }
  const rowBoard: StatusBoard = {
    ...board,
    setDegraded: (s, reasons) => void (ownsRow && board.setDegraded(s, reasons)),
  }
  const faults: (() => void)[] = []
  const throwLater = (err: Error) =>
    setTimeout(() => {
      throw err
    }, 0)
  const failpoint = createFailpoints(parseFailpoints(config.failpoints), {
    board,
    counters: init.failpointCounters,
    // After the ack (e.g. in shutdown) the fault strikes before the step goes on; during start,
    // right after the ack is posted.
    afterStart: (fault) => (acknowledged ? queueMicrotask(fault) : faults.push(fault)),
  })

  const group = createTaskGroup({
    log,
    beforeTask: (task) => failpoint(`${service}.before-task:${task}`),
    onFailure: (task, err) => throwLater(codedError('ERR_TASK_FAILED', `task ${task} failed`, err)),
  })

  const registry = new Registry()
  registry.setDefaultLabels({ service })
  new Gauge({
    name: 'sia_worker_tasks',
    help: 'Tasks running in the worker',
    registers: [registry],
    collect() {
      this.set(group.size())
    },
  })
  // Uptime of this worker (status page, dashboards): 0 until its start is acknowledged.
  const startTime = new Gauge({
    name: 'sia_worker_start_time_seconds',
    help: 'When the worker acknowledged its start, in seconds since the epoch (0: not started)',
    registers: [registry],
  })

  const collection = idleCollection()
  const collect = registerLoopDelay(registry, collection)

  const cleanups: ((stop: StopInfo) => Promise<void> | void)[] = []
  const startCancel = new AbortController()
  const ctx: ServiceContext = {
    service,
    config,
    successor: init.successor,
    previous: init.previous,
    log,
    repeats,
    registry,
    collect,
    collection,
    board: rowBoard,
    signal: AbortSignal.any([group.signal, startCancel.signal]),
    go: group.go,
    async serve(task, server, address, { heldBodyBytes = 0, behindService = false } = {}) {
      let info: AddressInfo | undefined
      await group.go(
        task,
        serveTask(
          server,
          address,
          (i, maxConnections) => {
            info = i
            log.info(
              { event: 'server.listening', task, address: i.address, port: i.port, maxConnections },
              `listening on ${i.port}`,
            )
          },
          {
            headersTimeoutMs: config.httpHeaderTimeout,
            requestTimeoutMs: config.httpRequestTimeout,
            maxConnections: config.httpMaxConnections,
            heldBodyBytes,
            leaving: behindService ? () => board.phase() === 'shutting-down' : undefined,
          },
          log,
        ),
        { waitReady: true },
      )
      if (!info) throw codedError('ERR_NOT_LISTENING', `${task} was shut down before it listened`)
      return info
    },
    onStop: (fn) => void cleanups.push(fn),
    expose: ports.expose,
    connect: ports.connect,
    failpoint,
  }

  if (ownsRow) takeRow()

  let starting: Promise<unknown> = Promise.resolve()
  rpc.handle('start', () => {
    const run = (async () => {
      try {
        await failpoint(`${service}.start`)
        await def.start(ctx)
        // A task that died while start() went on leaves the service without it: not started.
        const failed = group.seal()
        if (failed)
          throw codedError('ERR_TASK_FAILED', `task ${failed.name} failed during the start`, failed.err)
        // A start the run's cancel wound down that succeeded all the same serves: its row too.
        if (!ownsRow) takeRow()
        startTime.set(Date.now() / 1000)
        return null
      } finally {
        group.seal()
        acknowledged = true
        for (const fault of faults.splice(0)) setTimeout(fault, 0) // strikes after the ack is posted
      }
    })()
    starting = run.catch(() => {})
    return run
  })
  rpc.handle('cancel', () => {
    startCancel.abort()
    return null
  })
  rpc.handle('shutdown', async ({ deadlineMs, replaced }) => {
    // A short deadline keeps most of itself: a margin of all of it had an idle service cut.
    const deadline = monotonicMs() + Math.max(0, deadlineMs - Math.min(ACK_MARGIN_MS, deadlineMs / 4))
    // A thread told to stop no longer writes the service's row of the board: during a replacement
    // the row is its successor's (its heartbeat for liveness and the watchdog, its heap), and a
    // predecessor draining for seconds must not hide a successor whose loop is blocked.
    leaving = true
    stopHeartbeat()
    ownsRow = false
    await failpoint(`${service}.shutdown`)
    // A start still in flight winds down first (its waits abort), so nothing is created after
    // the tasks are stopped; a start that ignores the abort is not waited for past the deadline.
    startCancel.abort()
    const wound = await Promise.race([
      starting.then(() => true),
      sleep(Math.max(0, deadline - monotonicMs()), false, { ref: false }),
    ])
    // A start abandoned at the deadline is work cut short, as a task that outlived it.
    const timedOut = (await group.shutdown(deadline)) || !wound
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn({ replaced, deadline })
      } catch (err) {
        log.error({ event: 'service.stop.failed', err }, 'a cleanup failed; going on with the rest')
      }
    }
    // After the server's last answer and the last cleanup (a commit that fails at the end counts).
    repeats.flush()
    log.flush()
    return { timedOut }
  })
  ports.expose({
    collect: (view = false, answerBy?: number) => collect(view, answerBy),
  })
  rpc.handle('ping', () => null)
}

/** Writes the service's heartbeat and vitals every HEARTBEAT_MS; returns how to stop it. */
function startHeartbeat(service: ServiceName, board: StatusBoard): () => void {
  let elu = performance.eventLoopUtilization()
  const beat = () => {
    const next = performance.eventLoopUtilization()
    const heap = heapVitals()
    board.setVitals(
      service,
      heap.usedBytes,
      heap.limitBytes,
      performance.eventLoopUtilization(next, elu).utilization,
    )
    elu = next
    board.beat(service)
  }
  beat()
  const timer = setInterval(beat, HEARTBEAT_MS).unref()
  return () => clearInterval(timer)
}
