import { Logger } from '@nestjs/common';
import type { AmqpConnectionManager } from 'amqp-connection-manager';
import type { ChannelModel as Connection, ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { QueueMode, QueueType } from '../interfaces/sync-module-options.interface.js';
import { declareConsumerTopology, QueueArguments } from '../transport/topology.js';
import type { ConsumerDefinition } from './consumer-definition.js';
import type { EventProcessor } from './event-processor.js';
import { RunIntake } from './run-intake.js';

const MAX_REOPEN_DELAY_MS = 30_000;

export interface ConsumerStatus {
  consumer: string;
  queue: string;
  /** `recovering`: the connection or channel is down, or the queue could not be declared (see lastError). */
  state: 'consuming' | 'recovering' | 'stopped';
  inFlight: number;
  lastError?: string;
  /** With `partitions`: the partitions this instance consumes now. */
  partitions?: number[];
}

interface Delivery {
  channel: ConfirmChannel;
  message: ConsumeMessage;
}

/**
 * One handler's consumer on its own channel, so a channel error or a slow handler never
 * stalls another handler. On every (re)connect it re-declares the topology and re-attaches
 * the consumer; settling always uses the channel a message came on (a delivery tag means
 * nothing on another channel).
 */
export class QueueConsumer {
  private readonly logger = new Logger('SyncConsumer');
  private channel?: ConfirmChannel;
  private consumerTag?: string;
  private readonly waiting: Delivery[] = [];
  private readonly running = new Set<Promise<void>>();
  /** The runs of a parallel handler that deliveries can still join, oldest first. */
  private readonly intakes: RunIntake[] = [];
  private runningMessages = 0;
  private pumpScheduled = false;
  private stopped = true;
  private reopenTimer?: NodeJS.Timeout;
  private reopenAttempts = 0;
  private lastError?: string;
  private readonly queueArgs: QueueArguments;

  constructor(
    readonly definition: ConsumerDefinition,
    private readonly connection: AmqpConnectionManager,
    private readonly processor: EventProcessor,
    private readonly settings: { exchange: string; queueType: QueueType; queueMode: QueueMode; prefetch: number; reopenDelayMs: number },
  ) {
    this.queueArgs = new QueueArguments(settings.queueType, settings.queueMode);
  }

  /** Opens the channel now (errors such as a topology mismatch propagate) and again after every reconnect. */
  async start(): Promise<void> {
    this.stopped = false;
    this.connection.on('connect', this.onConnect);
    const current = this.connection.connection;
    if (current) await this.open(current);
  }

  private readonly onConnect = ({ connection }: { connection: Connection }): void => {
    this.reopenAttempts = 0;
    this.openOrRetry(connection);
  };

  /** Opens the channel; a failure (a declare refused, a channel limit) is retried with backoff while the connection lives. */
  private openOrRetry(connection: Connection): void {
    this.open(connection).catch((error: Error) => {
      const delay = Math.min(this.settings.reopenDelayMs * 2 ** this.reopenAttempts, MAX_REOPEN_DELAY_MS);
      this.reopenAttempts += 1;
      this.lastError = error.message;
      this.logger.error(`${this.definition.label}: cannot consume ${this.definition.queue}: ${error.message} Trying again in ${delay} ms.`);
      this.scheduleReopen(connection, delay);
    });
  }

  private scheduleReopen(connection: Connection, delayMs: number): void {
    clearTimeout(this.reopenTimer);
    if (this.stopped || this.connection.connection !== connection) return;
    this.reopenTimer = setTimeout(() => {
      if (!this.stopped && !this.channel && this.connection.connection === connection) this.openOrRetry(connection);
    }, delayMs);
  }

  private async open(connection: Connection): Promise<void> {
    if (this.stopped) return;
    const channel = await connection.createConfirmChannel();
    // Each retry or dead-letter copy in flight watches for its return: one listener per concurrent run.
    channel.setMaxListeners(0);
    // An error while setting up rejects setup() and is reported from there.
    channel.on('error', (error: Error) => {
      if (this.channel === channel) this.logger.error(`Channel of ${this.definition.queue} failed: ${error.message}`);
    });
    channel.on('close', () => this.onChannelClosed(channel, connection));
    try {
      await this.setup(channel);
    } catch (error) {
      await channel.close().catch(() => undefined);
      this.queueArgs.keepModeOrThrow(error);
      return this.open(connection);
    }
    for (const warning of this.queueArgs.takeWarnings()) this.logger.warn(warning);
    if (this.stopped) {
      // stop() ran while this channel was being set up: it must not keep consuming.
      await channel.close().catch(() => undefined);
      return;
    }
    this.channel = channel;
    this.reopenAttempts = 0;
    this.lastError = undefined;
  }

  /** A channel can close on its own (a channel error): reopen it while the connection lives. */
  private onChannelClosed(channel: ConfirmChannel, connection: Connection): void {
    // Deliveries of a dead channel that have not started are redelivered by the broker: running
    // them now would only do work whose ack cannot reach it.
    for (let i = this.waiting.length - 1; i >= 0; i--) if (this.waiting[i].channel === channel) this.waiting.splice(i, 1);
    if (this.channel !== channel) return;
    this.channel = undefined;
    this.consumerTag = undefined;
    this.scheduleReopen(connection, this.settings.reopenDelayMs);
  }

  private async setup(channel: ConfirmChannel): Promise<void> {
    const { definition, settings } = this;
    await declareConsumerTopology(channel, settings.exchange, this.queueArgs, {
      queue: definition.queue,
      eventTypes: definition.eventTypes,
      retryDelaysMs: definition.retry.delaysMs,
    });
    await channel.prefetch(Math.max(settings.prefetch, definition.concurrency), false);
    const tracker = this.processor.trackDeliveries(channel);
    const { consumerTag } = await channel.consume(
      definition.queue,
      (message) => {
        if (!message) return this.onCancelledByBroker(channel);
        tracker.delivered(message.fields.deliveryTag);
        this.accept({ channel, message });
      },
      { noAck: false },
    );
    this.consumerTag = consumerTag;
    this.logger.log(`${definition.label} consumes ${definition.queue} (${definition.eventTypes.join(', ')})`);
  }

  /** The broker cancels a consumer whose queue was deleted: reopen, which declares the queue again. */
  private onCancelledByBroker(channel: ConfirmChannel): void {
    if (this.stopped) return;
    this.logger.warn(`RabbitMQ cancelled the consumer of ${this.definition.queue} (queue deleted?); declaring it again`);
    channel.close().catch(() => undefined);
  }

  private accept(delivery: Delivery): void {
    if (this.stopped) {
      this.processor.requeue(delivery.channel, delivery.message);
      return;
    }
    this.waiting.push(delivery);
    // Deliveries arrive in bursts (all the frames of one socket read, one at a time): start runs
    // once the burst is in, so it is split into batches rather than the first delivery running alone.
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /**
   * Starts runs while there is room. Under load (the consumer holds at least half its prefetch
   * window, so the broker has more for it) a run takes at least a full share of the window
   * (prefetch / concurrency, at most batchSize), and while runs are in progress a new one
   * starts only once a full share waits: events commit in fewer, larger transactions (every
   * transaction costs its begin, dedupe insert and commit). Below that, what waits is split
   * evenly over the free runs and starts at once: the events of a batch run one after another,
   * so a consumer that keeps up spreads them out instead, and adds no wait to their latency. A
   * run ending always pumps again, so nothing waits for long.
   *
   * A `parallel` handler's deliveries first join a run whose transaction is still open, up to a
   * full share in all (see RunIntake): they start there at once, after one dedupe insert on its
   * connection, and share its commit and ack, where a run of their own would begin a transaction.
   */
  private pump(): void {
    const { concurrency, batchSize, parallel } = this.definition;
    const window = Math.max(this.settings.prefetch, concurrency);
    const fullShare = Math.min(batchSize, Math.ceil(window / concurrency));
    if (parallel) this.joinOpenRuns();
    while (!this.stopped && this.running.size < concurrency && this.waiting.length > 0) {
      const underLoad = 2 * (this.waiting.length + this.runningMessages) >= window;
      if (underLoad && this.running.size > 0 && this.waiting.length < fullShare) return;
      const even = Math.ceil(this.waiting.length / (concurrency - this.running.size));
      const share = Math.min(batchSize, underLoad ? Math.max(fullShare, even) : even);
      const { channel, message } = this.waiting.shift()!;
      const messages = [message];
      while (messages.length < share && this.waiting[0]?.channel === channel) messages.push(this.waiting.shift()!.message);
      this.runningMessages += messages.length;
      // A run that has no room left takes the same path as without joining.
      const intake = parallel && messages.length < fullShare ? new RunIntake(channel, fullShare - messages.length) : undefined;
      if (intake) this.intakes.push(intake);
      const run: Promise<void> = this.processor.processBatch(channel, messages, this.definition, intake).finally(() => {
        this.running.delete(run);
        this.runningMessages -= messages.length + (intake?.accepted ?? 0);
        this.pump();
      });
      this.running.add(run);
    }
  }

  /** Hands waiting deliveries to the newest run of their channel that still takes them. */
  private joinOpenRuns(): void {
    for (;;) {
      for (let i = this.intakes.length - 1; i >= 0; i--) if (!this.intakes[i].open) this.intakes.splice(i, 1);
      if (this.stopped || this.waiting.length === 0) return;
      const { channel } = this.waiting[0];
      let intake: RunIntake | undefined;
      for (let i = this.intakes.length - 1; i >= 0 && !intake; i--) if (this.intakes[i].channel === channel) intake = this.intakes[i];
      if (!intake) return;
      let count = 1;
      while (this.waiting[count]?.channel === channel) count++;
      const joined = intake.offer(this.waiting.slice(0, count).map(({ message }) => message));
      this.waiting.splice(0, joined);
      this.runningMessages += joined;
    }
  }

  /** Stops taking deliveries, hands the not-yet-started ones back, and waits (bounded) for those running. */
  async stop(timeoutMs: number): Promise<boolean> {
    this.stopped = true;
    clearTimeout(this.reopenTimer);
    this.connection.removeListener('connect', this.onConnect);
    if (this.channel && this.consumerTag) await this.channel.cancel(this.consumerTag).catch(() => undefined);
    this.consumerTag = undefined;
    for (const { channel, message } of this.waiting.splice(0)) this.processor.requeue(channel, message);
    return this.drain(timeoutMs);
  }

  private async drain(timeoutMs: number): Promise<boolean> {
    if (this.running.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      Promise.allSettled([...this.running]).then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (!finished) {
      this.logger.warn(`${this.definition.label}: ${this.runningMessages} event(s) still running after ${timeoutMs} ms (shutdownTimeout); their messages return to the queue`);
    }
    return finished;
  }

  /** For health checks: whether this handler is consuming right now, and why not. */
  get status(): ConsumerStatus {
    const state = this.stopped ? 'stopped' : this.channel ? 'consuming' : 'recovering';
    return { consumer: this.definition.consumer, queue: this.definition.queue, state, inFlight: this.runningMessages, lastError: this.lastError };
  }

  get inFlight(): number {
    return this.runningMessages;
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reopenTimer);
    this.connection.removeListener('connect', this.onConnect);
    const channel = this.channel;
    this.channel = undefined;
    await channel?.close().catch(() => undefined);
  }
}
