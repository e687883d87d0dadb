import type { DataSource } from 'typeorm';
import type { Duration } from '../options/duration.js';
import type { RetryOptions } from './retry-options.interface.js';

export type QueueType = 'classic' | 'quorum';

export interface SyncModuleOptions {
  /** This service's name: prefixes its queues and is the `source` of the events it publishes. */
  service: string;
  /** Broker URL, e.g. `amqp://user:pass@127.0.0.1:5672`. Give `url` or `urls`. */
  url?: string;
  /** Several broker URLs, tried in turn (a cluster). */
  urls?: string[];
  /** Topic exchange all events go through. Default `sync.events`. */
  exchange?: string;
  /** Unacknowledged messages per handler queue. Default 20. */
  prefetch?: number;
  /** Module-wide retry policy; `false` dead-letters on the first failure. Default 5 attempts, 1s/10s/1m/5m. */
  retry?: RetryOptions | false;
  /** `quorum` for replicated queues on a cluster. Default `classic`. */
  queueType?: QueueType;
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
}

/** Options after validation and defaults. */
export interface ResolvedSyncOptions {
  service: string;
  urls: string[];
  exchange: string;
  prefetch: number;
  retry: import('./retry-options.interface.js').RetryPolicy;
  queueType: QueueType;
  dataSource?: DataSource | string;
  publishTimeoutMs: number;
  maxPendingPublishes: number;
  shutdownTimeoutMs: number;
  startupTimeoutMs?: number;
  reconnectDelayMs: number;
  heartbeat: number;
  retentionMs: number | false;
}
