import type { RetryPolicy } from '../interfaces/retry-options.interface.js';
import type { EventContext } from './event-context.js';

export type EventHandler = (data: unknown, context: EventContext) => Promise<unknown>;

/** One handler as the transport runs it: its queue, what it subscribes to, and how it retries. */
export interface ConsumerDefinition {
  /** Stable name: the dedupe key's consumer and the second half of the queue name. */
  consumer: string;
  queue: string;
  eventTypes: string[];
  retry: RetryPolicy;
  concurrency: number;
  /** Waiting deliveries run together in one transaction, at most this many. */
  batchSize: number;
  /** The handlers of a batch start at once instead of one after another. */
  parallel: boolean;
  /** `key`: skip events whose sequence is not newer than the last one applied for their key. */
  ordering?: 'key';
  /** Spread over this many partition queues by key, each consumed by one instance at a time, in order. */
  partitions?: number;
  /** A run longer than this fails (and retries); `false`: no limit. */
  handlerTimeoutMs: number | false;
  /** Where it came from, for logs and errors (`CustomerProjection.onUserCreated`). */
  label: string;
  handler: EventHandler;
}
