/**
 * Thrown by a handler to skip the remaining retries: the event goes to the handler's
 * dead-letter queue at once with `sync-reason: non-retryable`.
 */
export class NonRetryableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NonRetryableError';
  }
}
