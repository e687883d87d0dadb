import type { ConnectionOptions } from 'node:tls';
import type { DataSource } from 'typeorm';
import type { Duration } from '../options/duration.js';
import type { RetryOptions } from './retry-options.interface.js';

export type QueueType = 'classic' | 'quorum';
/** RabbitMQ's mode of a classic queue (`x-queue-mode`); 3.12 and later ignore it. */
export type QueueMode = 'lazy' | 'default';

export interface SyncModuleOptions {
  /** This service's name: prefixes its queues and is the `source` of the events it publishes. */
  service: string;
  /** Broker URL, e.g. `amqp://user:pass@127.0.0.1:5672`. Give `url` or `urls`. */
  url?: string;
  /** Several broker URLs, tried in turn (a cluster). */
  urls?: string[];
  /** Topic exchange all events go through. Default `sync.events`. */
  exchange?: string;
  /** Unacknowledged messages per handler queue. Default 50. */
  prefetch?: number;
  /**
   * Deliveries already waiting for a handler run in one transaction, at most this many (one
   * dedupe insert, one commit); a failing event is then retried alone. 1 turns batching off.
   * Default 50. Per handler: `@OnEvent(type, { batchSize })`.
   */
  batchSize?: number;
  /** Module-wide retry policy; `false` dead-letters on the first failure. Default 5 attempts, 1s/10s/1m/5m. */
  retry?: RetryOptions | false;
  /** `quorum` for replicated queues on a cluster. Default `classic`. */
  queueType?: QueueType;
  /**
   * The mode of the classic queues this service declares: `lazy` (default) writes events to disk
   * as they arrive instead of also holding them in the broker's memory, `default` is RabbitMQ's
   * own. A queue that already exists keeps the mode it was created with (a warning says so).
   * Ignored by quorum queues and by RabbitMQ 3.12 and later.
   */
  queueMode?: QueueMode;
  /** The TypeORM DataSource (or its name) that stores processed events. Default: the app's default DataSource. */
  dataSource?: DataSource | string;
  /** How long a publish may wait for the broker's confirm, also while it is unreachable. Default 30s. */
  publishTimeout?: Duration;
  /** Publishes allowed to wait for the broker at once before new ones are refused. Default 10000. */
  maxPendingPublishes?: number;
  /** How long shutdown waits for handlers in flight. Default 10s. */
  shutdownTimeout?: Duration;
  /** Bootstrap fails if the broker is not reachable within this time. Default: wait until it is. */
  startupTimeout?: Duration;
  /** Wait between reconnection attempts. Default 2s. */
  reconnectDelay?: Duration;
  /** AMQP heartbeat in seconds. Default 10. */
  heartbeat?: number;
  /** How long processed-event ids are kept for deduplication. Default 7 days. */
  retention?: Duration | false;
  /** The transactional outbox (`sync_outbox`); `false` turns it off. See {@link OutboxOptions}. */
  outbox?: OutboxOptions | false;
  /**
   * Largest message body, in bytes: a larger delivery is dead-lettered without being parsed
   * (`sync-reason: too-large`), and publishing a larger event fails with `EventTooLargeError`.
   * Default 1 MiB.
   */
  maxMessageBytes?: number;
  /**
   * How long one handler run may take before it counts as failed: its transaction rolls back,
   * `ctx.signal` is aborted, and the event goes the retry way. `false` waits forever (RabbitMQ's
   * consumer_timeout then closes the channel after 30 minutes). Default 30s; per handler:
   * `@OnEvent(type, { handlerTimeout })`.
   */
  handlerTimeout?: Duration | false;
  /**
   * TLS options for `amqps://` URLs (Node's `tls.connect` options: `ca`, `cert`, `key`,
   * `passphrase`, `servername`, `rejectUnauthorized`, …), for publishing and consuming.
   */
  tls?: ConnectionOptions;
}

/** Where `@PublishesEvent` and `SyncPublisher.publish()` go when no transaction is open. */
export type OutsideTransactionPath = 'broker' | 'outbox';

export interface OutboxOptions {
  /**
   * Outside `SyncPublisher.transaction()` and handlers: `'broker'` (default) publishes straight
   * to RabbitMQ and resolves on its confirm; `'outbox'` writes the event to `sync_outbox` in a
   * transaction of its own and resolves once that commits (it then survives any broker outage).
   * Inside a transaction or a handler, events always go through the outbox.
   */
  outsideTransaction?: OutsideTransactionPath;
  /** Run the relay that publishes outbox rows in this instance. Default true. */
  relay?: boolean;
  /** How often the relay looks for rows it was not woken for (other instances', leftovers, retries). Default 1s. */
  pollInterval?: Duration;
  /** Rows the relay claims and publishes per cycle. Default 100. */
  batchSize?: number;
  /** Wait before a row that failed to publish is tried again; doubles per failure. Default 1s. */
  retryDelay?: Duration;
  /** Longest wait between tries of a failed row. Default 1m. */
  maxRetryDelay?: Duration;
  /** How long published rows are kept before pruning. Default 1 day; `false` keeps them. */
  retention?: Duration | false;
}

/** Options after validation and defaults. */
export interface ResolvedSyncOptions {
  service: string;
  urls: string[];
  exchange: string;
  prefetch: number;
  batchSize: number;
  retry: import('./retry-options.interface.js').RetryPolicy;
  queueType: QueueType;
  queueMode: QueueMode;
  dataSource?: DataSource | string;
  publishTimeoutMs: number;
  maxPendingPublishes: number;
  shutdownTimeoutMs: number;
  startupTimeoutMs?: number;
  reconnectDelayMs: number;
  heartbeat: number;
  retentionMs: number | false;
  outbox: ResolvedOutboxOptions;
  maxMessageBytes: number;
  handlerTimeoutMs: number | false;
  tls?: ConnectionOptions;
}

export interface ResolvedOutboxOptions {
  enabled: boolean;
  outsideTransaction: OutsideTransactionPath;
  relay: boolean;
  pollIntervalMs: number;
  batchSize: number;
  retryDelayMs: number;
  maxRetryDelayMs: number;
  retentionMs: number | false;
}
