import type { Duration } from '../options/duration.js';
import type { RetryOptions } from './retry-options.interface.js';

export interface OnEventOptions {
  /** Stable name of this handler: names its queue `<service>.<consumer>` and its dedupe records. Default `ClassName.methodName`. */
  consumer?: string;
  /** Overrides the module's retry policy for this handler; `false` dead-letters on the first failure. */
  retry?: RetryOptions | false;
  /** Events handled at once by this handler in this process. Default 1 (in queue order). */
  concurrency?: number;
  /**
   * Up to this many deliveries that are already waiting run in one transaction (one dedupe
   * insert, one commit). 1 runs each event in a transaction of its own. Default: the module's
   * `batchSize`.
   */
  batchSize?: number;
  /**
   * The handlers of one batch start at once, sharing its transaction, instead of one after
   * another; on PostgreSQL their statements are pipelined on the batch's connection (the
   * DataSource needs `extra: { pipeline: true }`). Gives up queue order within a batch, and a
   * handler must not open a nested transaction on `ctx.manager`. Default false.
   */
  parallel?: boolean;
  /**
   * `'key'`: a stale-event guard. The last applied `sequence` per event key is stored in
   * `sync_key_offsets` in the handler's transaction; an event whose sequence is not newer is
   * acked and skipped (counted as `stale`), and one after a gap runs with `ctx.gap` set. An
   * event without a key or sequence is dead-lettered (`sync-reason: unordered`).
   */
  ordering?: 'key';
  /**
   * Strict per-key order with several instances: the handler's events are spread over this many
   * partition queues by their key, each consumed by one instance at a time, one event at a time;
   * instances share the partitions. A failed event is retried in place (its partition waits).
   * 2 to 64. See README "Partitions".
   */
  partitions?: number;
  /** Overrides the module's `handlerTimeout` for this handler; `false` waits forever. */
  handlerTimeout?: Duration | false;
}

export interface OnEventMetadata {
  eventTypes: string[];
  options: OnEventOptions;
}
