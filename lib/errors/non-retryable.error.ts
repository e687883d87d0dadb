import { IntrinsicException } from '@nestjs/common';

/**
 * Thrown by a handler to skip the remaining retries: the event goes to the handler's
 * dead-letter queue at once with `sync-reason: non-retryable`. It is an expected outcome, so
 * Nest's fallback exception filter does not log it again (the library logs the dead letter).
 */
export class NonRetryableError extends IntrinsicException {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NonRetryableError';
  }
}
