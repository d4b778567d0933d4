/** Errors carry a stable `code`; this is the shape in which they cross threads. */
export interface SerializedError {
  name: string
  message: string
  code?: string
  stack?: string
}

export type CodedError = Error & { code: string }

export function codedError(code: string, message: string, cause?: unknown): CodedError {
  const err = new Error(message, cause === undefined ? undefined : { cause }) as CodedError
  err.code = code
  return err
}

export function serializeError(err: unknown): SerializedError {
  if (err instanceof Error) {
    const code = (err as Partial<CodedError>).code
    return {
      name: err.name,
      message: err.message,
      ...(typeof code === 'string' ? { code } : {}),
      ...(err.stack ? { stack: err.stack } : {}),
    }
  }
  return { name: 'Error', message: String(err) }
}

export function deserializeError(s: SerializedError): Error {
  const err = new Error(s.message) as Error & { code?: string }
  err.name = s.name
  if (s.code) err.code = s.code
  if (s.stack) err.stack = s.stack
  return err
}
