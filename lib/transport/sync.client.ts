import { Logger } from '@nestjs/common';
import { ClientRMQ, RmqRecord, type ReadPacket, type WritePacket } from '@nestjs/microservices';
import type { AmqpConnectionManager, ChannelWrapper } from 'amqp-connection-manager';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import { BrokerUnavailableError } from '../errors/broker-unavailable.error.js';
import { EventTooLargeError } from '../errors/event-too-large.error.js';
import { PublishBufferFullError } from '../errors/publish-buffer-full.error.js';
import { PublishRejectedError } from '../errors/publish-rejected.error.js';
import { PublishTimeoutError } from '../errors/publish-timeout.error.js';
import type { PublishOptions } from '../interfaces/publish-options.interface.js';
import type { SyncEvent } from '../interfaces/sync-event.interface.js';
import type { ResolvedSyncOptions } from '../interfaces/sync-module-options.interface.js';
import { assertEventType } from '../options/event-type.js';
import { maskUrl } from '../options/resolve-options.js';
import { buildEnvelope, publishPropertiesOf, serializeEnvelope } from '../publisher/envelope.js';
import type { SyncMetrics } from '../sync.metrics.js';
import type { PendingOutboxRow } from '../outbox/outbox.store.js';

const QUIET_RETRY_LOG_MS = 30_000;

/**
 * A Nest `ClientProxy` on RabbitMQ whose `emit()` is the library's reliable publish: the
 * envelope of DESIGN §3, persistent, `mandatory`, resolved only on the broker's confirm, kept
 * (in bounded memory) while the broker is unreachable, and rejected after `publishTimeout`.
 * Request-response (`send()`) is not part of event sync and is refused.
 */
export class SyncClient extends ClientRMQ {
  protected override readonly logger = new Logger('SyncClient');
  private manager?: AmqpConnectionManager;
  private publisher?: ChannelWrapper;
  private pending = 0;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly sync: ResolvedSyncOptions,
    private readonly metrics: SyncMetrics,
  ) {
    super({
      urls: sync.urls,
      exchange: sync.exchange,
      exchangeType: 'topic',
      wildcards: true,
      persistent: true,
      socketOptions: { heartbeatIntervalInSeconds: sync.heartbeat, reconnectTimeInSeconds: sync.reconnectDelayMs / 1000, connectionOptions: sync.tls },
    });
  }

  /** Creates the connection and publishing channel once; publishes wait in the channel until it is up. */
  override async connect(): Promise<any> {
    if (this.publisher) return;
    const manager = this.createClient() as unknown as AmqpConnectionManager;
    this.manager = manager;
    this.client = manager as never;
    manager.on('connect', () => this.logger.log(`Publisher connected to ${maskUrl(this.sync.urls[0])}`));
    manager.on('disconnect', ({ err }) => this.logger.warn(`Publisher lost RabbitMQ (${err?.message ?? 'closed'}); publishes wait up to ${this.sync.publishTimeoutMs} ms`));
    let lastWarning = 0;
    manager.on('connectFailed', ({ err, url }) => {
      if (Date.now() - lastWarning < QUIET_RETRY_LOG_MS) return;
      lastWarning = Date.now();
      this.logger.warn(
        `Publisher cannot reach RabbitMQ at ${maskUrl(String(url))} (${err?.message}); retrying every ${this.sync.reconnectDelayMs} ms, ` +
          `publishes wait up to ${this.sync.publishTimeoutMs} ms. Is it running? Locally: \`rabbitmq-server -detached\`; otherwise check the \`url\` option.`,
      );
    });
    this.publisher = manager.createChannel({
      name: 'sync-publisher',
      confirm: true,
      json: false,
      publishTimeout: this.sync.publishTimeoutMs,
      setup: (channel: ConfirmChannel) => this.setupPublisher(channel),
    });
    // An unhandled 'error' event would crash the process; the publish that failed rejects on its own.
    this.publisher.on('error', (error: Error) => this.logger.error(`Publishing channel: ${error.message}`));
  }

  /** Waits until the publishing connection is up; used at startup when `startupTimeout` is set. */
  async waitUntilConnected(timeoutMs: number): Promise<void> {
    await this.connect();
    if (this.manager!.isConnected()) return;
    try {
      await this.manager!.connect({ timeout: timeoutMs });
    } catch (error) {
      // Bootstrap fails: stop reconnecting, so a process that catches the error is not kept alive by us.
      await this.close();
      throw new BrokerUnavailableError(maskUrl(this.sync.urls[0]), timeoutMs, error);
    }
  }

  private async setupPublisher(channel: ConfirmChannel): Promise<void> {
    await channel.assertExchange(this.sync.exchange, 'topic', { durable: true });
    channel.on('return', (message: ConsumeMessage) => {
      this.metrics.increment('unroutable');
      this.logger.warn(
        `Event ${message.properties.type ?? '?'} ${message.properties.messageId ?? '?'} is unroutable: no queue is bound to ` +
          `routing key "${message.fields.routingKey}" on exchange "${message.fields.exchange}", so no service received it.`,
      );
    });
  }

  /** Publishes an event and resolves with its envelope once the broker has confirmed it. */
  async publish<T>(eventType: string, data: T, options?: PublishOptions): Promise<SyncEvent<T>>;
  /** @internal Nest's request-response path: not supported by an event transport. */
  publish(packet: ReadPacket, callback: (packet: WritePacket) => void): () => void;
  publish(first: unknown, second?: unknown, third?: unknown): unknown {
    if (typeof second === 'function') {
      (second as (packet: WritePacket) => void)({
        err: new Error('SyncClient carries events only: use emit(), not send(). Request-response is not part of event sync.'),
      });
      return () => undefined;
    }
    return this.publishEvent(first as string, second, third as PublishOptions | undefined);
  }

  private async publishEvent<T>(eventType: string, data: T, options: PublishOptions = {}): Promise<SyncEvent<T>> {
    assertEventType(eventType, 'SyncPublisher.publish');
    const envelope = buildEnvelope(this.sync.service, eventType, data, options);
    const body = serializeEnvelope(envelope);
    if (body.length > this.sync.maxMessageBytes) throw new EventTooLargeError(eventType, body.length, this.sync.maxMessageBytes);
    await this.publishEnvelope(envelope, options.headers, body);
    return envelope;
  }

  /** Publishes an outbox row: its stored envelope, byte for byte. */
  publishStored(row: PendingOutboxRow): Promise<void> {
    const envelope = JSON.parse(row.payload) as SyncEvent;
    return this.publishEnvelope(envelope, row.headers, Buffer.from(row.payload), row.routingKey);
  }

  /** Whether the publishing connection is up right now. */
  isConnected(): boolean {
    return this.manager?.isConnected() ?? false;
  }

  /** The one place an envelope leaves this process. */
  async publishEnvelope(envelope: SyncEvent, headers?: PublishOptions['headers'], body = serializeEnvelope(envelope), routingKey = envelope.eventType): Promise<void> {
    // The slot is taken in the same tick as the check, so a burst cannot overshoot the bound.
    if (this.pending >= this.sync.maxPendingPublishes) {
      this.metrics.increment('publishFailed');
      throw new PublishBufferFullError(envelope.eventType, this.sync.maxPendingPublishes);
    }
    this.pending += 1;
    let confirmed: Promise<unknown> | undefined;
    try {
      if (!this.publisher) await this.connect();
      confirmed = this.publisher!.publish(this.sync.exchange, routingKey, body, publishPropertiesOf(envelope, headers));
      this.inFlight.add(confirmed);
      await confirmed;
      this.metrics.increment('published');
    } catch (error) {
      this.metrics.increment('publishFailed');
      const failure =
        error instanceof Error && error.message === 'timeout'
          ? new PublishTimeoutError(envelope.eventType, envelope.eventId, this.sync.publishTimeoutMs)
          : new PublishRejectedError(envelope.eventType, envelope.eventId, error instanceof Error ? error.message : String(error), { cause: error });
      this.logger.error(failure.message);
      throw failure;
    } finally {
      this.pending -= 1;
      if (confirmed) this.inFlight.delete(confirmed);
    }
  }

  /** Nest's `emit()` lands here: the pattern is the event type, the data the event's data. */
  protected override async dispatchEvent(packet: ReadPacket): Promise<any> {
    const eventType = typeof packet.pattern === 'string' ? packet.pattern : JSON.stringify(packet.pattern);
    const record = packet.data instanceof RmqRecord ? packet.data : undefined;
    try {
      return await this.publishEvent(eventType, record ? record.data : packet.data, { headers: record?.options?.headers, eventId: record?.options?.messageId });
    } catch (error) {
      // emit() is often not subscribed to: broker failures are logged where they happen, the rest here.
      if (!(error instanceof PublishTimeoutError || error instanceof PublishRejectedError)) {
        this.logger.error(`emit('${eventType}') failed: ${(error as Error).message}`);
      }
      throw error;
    }
  }

  /** Publishes waiting for a confirm right now. */
  get pendingPublishes(): number {
    return this.pending;
  }

  /** Waits (bounded) until every publish in flight is confirmed or has failed. */
  async flush(timeoutMs = this.sync.publishTimeoutMs): Promise<void> {
    if (this.inFlight.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.inFlight]),
      new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
    ]);
    clearTimeout(timer);
  }

  override async close(): Promise<void> {
    await this.flush();
    const { publisher, manager } = this;
    this.publisher = undefined;
    this.manager = undefined;
    this.client = null;
    await publisher?.close().catch(() => undefined);
    await manager?.close().catch(() => undefined);
  }
}
