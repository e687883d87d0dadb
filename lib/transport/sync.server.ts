import { Logger } from '@nestjs/common';
import { type CustomTransportStrategy, ServerRMQ } from '@nestjs/microservices';
import type { AmqpConnectionManager } from 'amqp-connection-manager';
import type { ConsumerDefinition, EventHandler } from '../consumer/consumer-definition.js';
import type { EventContext } from '../consumer/event-context.js';
import type { EventProcessor } from '../consumer/event-processor.js';
import { settleHandlerResult } from '../consumer/handler-result.js';
import { PartitionedConsumer } from '../consumer/partitioned-consumer.js';
import { type ConsumerStatus, QueueConsumer } from '../consumer/queue-consumer.js';
import { BrokerUnavailableError } from '../errors/broker-unavailable.error.js';
import { DuplicateConsumerError } from '../errors/duplicate-consumer.error.js';
import { InvalidDecoratorUsageError } from '../errors/invalid-decorator-usage.error.js';
import { consumerNameProblem } from '../options/consumer-name.js';
import { assertEventType } from '../options/event-type.js';
import type { ResolvedSyncOptions } from '../interfaces/sync-module-options.interface.js';
import { maskUrl } from '../options/resolve-options.js';
import { PARTITION_REBALANCE_INTERVAL_MS } from '../sync.constants.js';

/** Pass it as the transport of `@EventPattern(type, SYNC_TRANSPORT)` to serve a pattern here only. */
export const SYNC_TRANSPORT = Symbol('nestjs-event-sync');

const QUIET_RETRY_LOG_MS = 30_000;

type NestHandler = ((data: unknown, context: unknown) => Promise<unknown>) & {
  isEventHandler?: boolean;
  extras?: Record<string, unknown>;
  next?: NestHandler;
};

/**
 * The consuming side as a Nest transport strategy. It extends Nest's `ServerRMQ` (connection
 * management, status events, `unwrap()`), and replaces its single shared queue with one
 * durable queue per handler, retry tiers, a DLQ and the transactional dedupe pipeline.
 *
 * `@OnEvent` handlers are registered by the module; `@EventPattern` controller methods are
 * served too when the app connects this server: `app.connectMicroservice({ strategy: app.get(SyncServer) })`.
 */
export class SyncServer extends ServerRMQ implements CustomTransportStrategy {
  override readonly transportId = SYNC_TRANSPORT as never;
  protected override readonly logger = new Logger('SyncServer');
  private connection?: AmqpConnectionManager;
  private processor?: EventProcessor;
  private readonly definitions = new Map<string, ConsumerDefinition>();
  private readonly consumers = new Map<string, QueueConsumer | PartitionedConsumer>();
  private starting?: Promise<void>;

  constructor(private readonly sync: ResolvedSyncOptions) {
    super({
      urls: sync.urls,
      noAck: false,
      prefetchCount: sync.prefetch,
      socketOptions: { heartbeatIntervalInSeconds: sync.heartbeat, reconnectTimeInSeconds: sync.reconnectDelayMs / 1000, connectionOptions: sync.tls },
    });
  }

  /** @internal Set by the module once the DataSource is known. */
  usePipeline(processor: EventProcessor): void {
    this.processor = processor;
  }

  /** Adds a handler with its own queue. Two handlers may not share a consumer name. */
  register(definition: ConsumerDefinition): void {
    const existing = this.definitions.get(definition.consumer);
    if (existing) throw new DuplicateConsumerError(definition.consumer, existing.label, definition.label);
    this.definitions.set(definition.consumer, definition);
  }

  get registered(): ConsumerDefinition[] {
    return [...this.definitions.values()];
  }

  /** Nest calls this for a connected microservice; the module calls it at bootstrap. Idempotent. */
  override async listen(callback: (error?: unknown, ...args: unknown[]) => void): Promise<void> {
    // `startAllMicroservices()` may run before `init()` (the order Nest documents for hybrid
    // apps): the module then starts consuming at bootstrap, @EventPattern handlers included.
    if (!this.processor) return callback();
    try {
      await this.start();
      callback();
    } catch (error) {
      callback(error);
    }
  }

  /** Connects (waiting for the broker if it is down), then consumes every registered handler's queue. */
  override async start(): Promise<void> {
    const previous = this.starting ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.startConsumers());
    this.starting = run;
    return run;
  }

  private async startConsumers(): Promise<void> {
    if (!this.processor) throw new Error('SyncServer has no pipeline yet: it starts when the application that imports SyncModule bootstraps.');
    this.adoptEventPatterns();
    // A service that only publishes needs no consuming connection.
    if (this.definitions.size === 0) return;
    const connection = await this.connect();
    for (const definition of this.definitions.values()) {
      if (this.consumers.has(definition.consumer)) continue;
      const settings = { exchange: this.sync.exchange, queueType: this.sync.queueType, queueMode: this.sync.queueMode, prefetch: this.sync.prefetch };
      const consumer = definition.partitions
        ? new PartitionedConsumer(definition, connection, this.processor, { ...settings, rebalanceIntervalMs: PARTITION_REBALANCE_INTERVAL_MS })
        : new QueueConsumer(definition, connection, this.processor, { ...settings, reopenDelayMs: this.sync.reconnectDelayMs });
      await consumer.start();
      this.consumers.set(definition.consumer, consumer);
    }
  }

  private async connect(): Promise<AmqpConnectionManager> {
    if (!this.connection) {
      const connection = (await this.createClient()) as unknown as AmqpConnectionManager;
      this.connection = connection;
      this.server = connection as never;
      // Every handler's consumer listens for reconnects: dozens of listeners are expected, not a leak.
      connection.setMaxListeners(0);
      this.watch(connection);
      // Listeners added through `server.on(...)` before the connection existed.
      for (const { event, callback } of this.pendingEventListeners) connection.on(event as never, callback as never);
      this.pendingEventListeners = [];
    }
    const connection = this.connection;
    if (connection.isConnected()) return connection;
    const url = maskUrl(this.sync.urls[0]);
    try {
      await connection.connect({ timeout: this.sync.startupTimeoutMs });
    } catch (error) {
      // Bootstrap fails: stop reconnecting, so a process that catches the error is not kept alive by us.
      this.connection = undefined;
      this.server = null as never;
      await connection.close().catch(() => undefined);
      if (/connect timeout/.test((error as Error).message)) throw new BrokerUnavailableError(url, this.sync.startupTimeoutMs ?? 0, error);
      throw error;
    }
    return connection;
  }

  private watch(connection: AmqpConnectionManager): void {
    let lastWarning = 0;
    connection.on('connect', ({ url }) => {
      this._status$.next('connected' as never);
      this.logger.log(`Connected to RabbitMQ at ${maskUrl(typeof url === 'string' ? url : this.sync.urls[0])}`);
    });
    connection.on('disconnect', ({ err }) => {
      this._status$.next('disconnected' as never);
      this.logger.warn(`Lost RabbitMQ (${err?.message ?? 'closed'}); reconnecting every ${this.sync.reconnectDelayMs} ms, consumers re-attach on their own`);
    });
    connection.on('connectFailed', ({ err, url }) => {
      const now = Date.now();
      if (now - lastWarning < QUIET_RETRY_LOG_MS) return;
      lastWarning = now;
      this.logger.warn(
        `Cannot reach RabbitMQ at ${maskUrl(String(url))} (${err?.message}); retrying every ${this.sync.reconnectDelayMs} ms. ` +
          `Is it running? Locally: \`rabbitmq-server -detached\`; otherwise check the \`url\` option.`,
      );
    });
    connection.on('blocked', ({ reason }) => this.logger.warn(`RabbitMQ blocked the connection: ${reason}`));
  }

  /** Turns the `@EventPattern` handlers Nest added into consumers: one queue per pattern. */
  private adoptEventPatterns(): void {
    for (const [pattern, head] of this.getHandlers() as Map<string, NestHandler>) {
      if (!head.isEventHandler) {
        this.logger.warn(`@MessagePattern(${pattern}) is request-response and not served by the event transport; use @EventPattern.`);
        continue;
      }
      assertEventType(pattern, `@EventPattern(${JSON.stringify(pattern)}) served by SyncServer (wildcards are not supported: one pattern per event type)`);
      const named: unknown = head.extras?.consumer ?? pattern;
      const problem = consumerNameProblem(named);
      if (problem) throw new InvalidDecoratorUsageError(`@EventPattern(${JSON.stringify(pattern)}) extras: ${problem}.`);
      const consumer = named as string;
      if (this.definitions.get(consumer)?.label === `@EventPattern(${pattern})`) continue;
      // Nest chains the methods of one pattern: the head runs the others (`next`) and joins their results.
      const handler: EventHandler = async (data, context: EventContext) => settleHandlerResult(head(data, context));
      this.register({
        consumer,
        queue: `${this.sync.service}.${consumer}`,
        eventTypes: [pattern],
        retry: this.sync.retry,
        concurrency: 1,
        batchSize: this.sync.batchSize,
        parallel: false,
        handlerTimeoutMs: this.sync.handlerTimeoutMs,
        label: `@EventPattern(${pattern})`,
        handler,
      });
    }
  }


  /** Per handler: consuming, recovering (with the last error) or stopped. For health checks. */
  consumerStatus(): ConsumerStatus[] {
    return [...this.definitions.values()].map(
      (definition) =>
        this.consumers.get(definition.consumer)?.status ?? { consumer: definition.consumer, queue: definition.queue, state: 'stopped', inFlight: 0 },
    );
  }

  /** Stops consuming and waits (bounded) for handlers in flight to finish and settle. */
  async drain(timeoutMs = this.sync.shutdownTimeoutMs): Promise<void> {
    await Promise.all([...this.consumers.values()].map((consumer) => consumer.stop(timeoutMs)));
  }

  override async close(): Promise<void> {
    await this.drain();
    await Promise.all([...this.consumers.values()].map((consumer) => consumer.close()));
    this.consumers.clear();
    const connection = this.connection;
    this.connection = undefined;
    this.server = null;
    this.starting = undefined;
    await connection?.close().catch(() => undefined);
  }
}
