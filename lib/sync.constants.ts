/** Metadata keys are namespaced so they never collide with other libraries' decorators. */
export const ON_EVENT_METADATA = 'nestjs-event-sync:on-event';
export const PUBLISHES_EVENT_METADATA = 'nestjs-event-sync:publishes-event';

export const DEFAULT_EXCHANGE = 'sync.events';
export const DEFAULT_PREFETCH = 50;
export const DEFAULT_BATCH_SIZE = 50;
export const DEFAULT_CONCURRENCY = 1;
export const DEFAULT_PUBLISH_TIMEOUT_MS = 30_000;
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;
export const DEFAULT_RECONNECT_DELAY_MS = 2_000;
export const DEFAULT_MAX_PENDING_PUBLISHES = 10_000;
export const DEFAULT_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;
/** Deliveries larger than this are dead-lettered unread (`too-large`), and publishes larger are refused. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
/**
 * A handler run longer than this fails (and retries). With the default prefetch of 50 and one
 * run at a time, no delivery waits unacknowledged longer than 25 minutes: under RabbitMQ's
 * default consumer_timeout of 30 minutes, which would close the channel.
 */
export const DEFAULT_HANDLER_TIMEOUT_MS = 30_000;
/** RabbitMQ's default `consumer_timeout`. */
export const BROKER_CONSUMER_TIMEOUT_MS = 30 * 60 * 1000;
export const DEFAULT_PRUNE_INTERVAL_MS = 60 * 60 * 1000;
export const DEFAULT_OUTBOX = {
  pollIntervalMs: 1_000,
  batchSize: 100,
  retryDelayMs: 1_000,
  maxRetryDelayMs: 60_000,
  retentionMs: 24 * 60 * 60 * 1000,
} as const;

/**
 * One first run and four retries spread over about six minutes: long enough to ride out a
 * deploy or a database failover, short enough that a real bug reaches the DLQ the same hour.
 */
export const DEFAULT_RETRY = { attempts: 5, delays: ['1s', '10s', '1m', '5m'] } as const;

/** Our own headers. No `x-` prefix: RabbitMQ 3.13+/4.x treat `x-` headers as broker-owned. */
export const HEADER = {
  attempt: 'sync-attempt',
  reason: 'sync-reason',
  errorName: 'sync-error-name',
  errorMessage: 'sync-error-message',
  errorStack: 'sync-error-stack',
  consumer: 'sync-consumer',
  attempts: 'sync-attempts',
  firstFailureAt: 'sync-first-failure-at',
  lastFailureAt: 'sync-last-failure-at',
  originalExchange: 'sync-original-exchange',
  originalRoutingKey: 'sync-original-routing-key',
  /** The key's bucket (0–255, as a string) that partitioned consumers route on; set with `key`. */
  keyBucket: 'sync-key-bucket',
} as const;

/** Buckets a key hashes into; a handler's partitions each take the buckets b with b % partitions = its index. */
export const KEY_BUCKETS = 256;
/** Most partitions one handler may have. */
export const MAX_PARTITIONS = 64;
/** How often a partitioned handler checks how many instances share it and rebalances. */
export const PARTITION_REBALANCE_INTERVAL_MS = 1_000;

export const MAX_STACK_HEADER_LENGTH = 2_000;
