import { monotonicMs } from '../shared/clock.js'
import type { ServiceName } from '../shared/services.js'

/** The first reason the run was cancelled; later causes never replace it. */
export type CancelCause =
  | { cause: 'signal'; signal: NodeJS.Signals }
  | { cause: 'start-failed'; service: ServiceName; err: unknown }
  | { cause: 'crash-loop'; service: ServiceName }

export interface RunContext {
  readonly signal: AbortSignal
  /** Cancels with `cause` if not cancelled yet. Returns false when an earlier cause already won. */
  cancel(cause: CancelCause): boolean
  /** Resolves with the first cause. */
  readonly cancelled: Promise<CancelCause>
  /**
   * Epoch ms by which the whole shutdown must be over: the first cancel plus the budget
   * (SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT). Infinity while the run goes on.
   */
  budgetEnd(): number
}

export function createRunContext(budgetMs: number, onCancel: (cause: CancelCause) => void): RunContext {
  const controller = new AbortController()
  let resolve!: (c: CancelCause) => void
  const cancelled = new Promise<CancelCause>((r) => {
    resolve = r
  })
  let end = Number.POSITIVE_INFINITY
  return {
    signal: controller.signal,
    cancelled,
    budgetEnd: () => end,
    cancel(cause) {
      if (controller.signal.aborted) return false
      end = monotonicMs() + budgetMs
      controller.abort(cause)
      onCancel(cause)
      resolve(cause)
      return true
    },
  }
}
