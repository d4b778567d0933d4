import { loadConfig } from '../../shared/config/load.js'
import type { Config } from '../../shared/config/types.js'
import { createFailpointCounters } from '../../shared/failpoints.js'
import { createStatusBoard, type StatusBoard } from '../../shared/status-board.js'
import { spawnWorker, type WorkerHandle } from '../../supervisor/worker-handle.js'

/**
 * The health check's worker alone, spawned as the supervisor spawns it (on loopback, port 0,
 * logging warnings only), with the status board it writes: for what one thread does, without a run.
 */
export function spawnLoneHealthcheck(): { handle: WorkerHandle; board: StatusBoard } {
  const inv = loadConfig([], { HEALTH_CHECK_ADDR: '127.0.0.1:0', LOG_LEVEL: 'warn' })
  const config = (inv as { config: Config }).config
  const board = createStatusBoard()
  const handle = spawnWorker('healthcheck', {
    config,
    board: board.buffer,
    failpointCounters: createFailpointCounters([]),
  })
  return { handle, board }
}
