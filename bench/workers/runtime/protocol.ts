/** What the harness and its worker processes tell each other (over the IPC channel of `fork`). */

/** Partitions of scenario h. */
export const BENCH_PARTITIONS = 4;

export type ScenarioId = 'a' | 'b' | 'c' | 'd' | 'e' | 'f' | 'g' | 'h' | 'i' | 'j';

/** The one event type (routing key) of every scenario. */
export const EVENT_TYPE = 'UserUpserted';

export type DatabaseConfig = { type: 'postgres'; url: string; schema: string } | { type: 'sqlite'; path: string };

/** Everything a worker needs, passed as JSON in the BENCH_WORKER environment variable. */
export interface WorkerConfig {
  scenario: ScenarioId;
  role: 'consumer' | 'publisher';
  amqpUrl: string;
  exchange: string;
  /** The handler's queue. For this library it is `<service>.<consumer>`, as the library names it. */
  queue: string;
  /** Scenarios a–c: where a failed message is dead-lettered to wait before it goes back to `queue`. */
  retryQueue?: string;
  /** Scenarios d–g: the SyncModule `service` and the handler's `consumer` name. */
  service?: string;
  consumerName?: string;
  retryDelayMs: number;
  prefetch: number;
  /** This library's per-handler `concurrency`. */
  concurrency: number;
  /** This library's `batchSize` (SyncModule option); undefined: the library's default. */
  batchSize?: number;
  /** This library's `queueMode` (SyncModule option); undefined: the library's default. */
  queueMode?: 'lazy' | 'default';
  /** Scenarios d–g: the handler's `parallel` option, and pg's pipeline mode on the pool. */
  parallel: boolean;
  /** Connections in the database pool of every scenario. */
  poolSize: number;
  /** Where the handler writes (and, for this library, dedupes). */
  database: DatabaseConfig;
  /** Scenarios d–g: the publishing service also needs a DataSource; it is always PostgreSQL. */
  publisherDatabase?: DatabaseConfig;
  usersTable: string;
  /** Registered before consumption starts (the drain phase: the queue is already full). */
  expect?: Expectation;
  /** Nest logger levels of the Nest-based workers. */
  logLevels: Array<'log' | 'error' | 'warn' | 'debug' | 'verbose' | 'fatal'>;
  /** Soak mode: sample the process's memory at this interval. */
  memorySampleMs?: number;
}

/** A range of events the consumer must see handled and acked. */
export interface Expectation {
  fromSeq: number;
  count: number;
  /** Every n-th event (seq % n === 0) fails on its first run; 0: none fail. */
  failEvery: number;
  /** Record publish -> delivery, publish -> handler start and publish -> ack for each event. */
  latency: boolean;
}

export interface LatencySummary {
  n: number;
  p50: number;
  p99: number;
  max: number;
  mean: number;
}

export interface ExpectationResult {
  count: number;
  /** Events that never failed. */
  healthy: number;
  /** Events that failed once and went through the retry tier. */
  retried: number;
  firstStartAt: number;
  lastAckAt: number;
  /** The last ack of an event that never failed. */
  lastHealthyAckAt: number;
  /** When the consumer asked the broker for deliveries (basic.consume) on its queue. */
  consumeStartedAt?: number;
  handlerStart?: LatencySummary;
  /** Publish -> the consume callback of the client in the consumer process, before the handler's path starts. */
  delivery?: LatencySummary;
  ack?: LatencySummary;
  /** Size of one message body as it arrived. */
  bodyBytes?: number;
}

export interface Progress {
  done: number;
  count: number;
  started: number;
}

export interface BurstCommand {
  /** Prefix of the user ids, unique per scenario and round. */
  tag: string;
  fromSeq: number;
  count: number;
  /** Publishes awaiting their confirm at once. */
  window: number;
}

export interface SteadyCommand {
  tag: string;
  fromSeq: number;
  rate: number;
  durationMs: number;
}

export interface PublishResult {
  count: number;
  firstPublishAt: number;
  lastConfirmAt: number;
}

export interface ProcessStats {
  rssMb: number;
  /** Peak RSS of the process so far (getrusage). */
  maxRssMb: number;
  heapUsedMb: number;
  /** Soak mode: memory over time, `at` in seconds since the worker was ready. */
  samples?: MemorySample[];
}

export interface MemorySample {
  at: number;
  rssMb: number;
  /** V8 heap in use (live objects plus garbage not yet collected); absent in soaks recorded before it was sampled. */
  heapUsedMb?: number;
  /** Memory outside the V8 heap held by JS objects, e.g. message Buffers. */
  externalMb?: number;
}

export type Command = 'boot' | 'expect' | 'await' | 'progress' | 'burst' | 'steady' | 'stats' | 'stop';

export interface Request {
  id: number;
  command: Command;
  args?: unknown;
}

export type Reply = { id: number; ok: true; result?: unknown } | { id: number; ok: false; error: string };

/** Sent once the worker's modules are loaded: it boots (connects, consumes) on the `boot` command. */
export interface Loaded {
  loaded: true;
}

export interface Ready {
  ready: true;
  /** Versions and settings the worker wants in the report. */
  info?: Record<string, string>;
}
