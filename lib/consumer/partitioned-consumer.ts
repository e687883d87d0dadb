import { Logger } from '@nestjs/common';
import type { AmqpConnectionManager } from 'amqp-connection-manager';
import type { Channel, ChannelModel as Connection, ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { QueueMode, QueueType } from '../interfaces/sync-module-options.interface.js';
import { declarePartitionTopology, membersQueueName, partitionQueueName, QueueArguments } from '../transport/topology.js';
import type { ConsumerDefinition } from './consumer-definition.js';
import type { EventProcessor } from './event-processor.js';
import type { ConsumerStatus } from './queue-consumer.js';

export interface PartitionSettings {
  exchange: string;
  queueType: QueueType;
  queueMode: QueueMode;
  prefetch: number;
  rebalanceIntervalMs: number;
}

/**
 * A handler spread over partition queues (`<queue>.p<i>`) by event key. Each partition is
 * consumed by one instance at a time (an exclusive consumer), one event at a time, so the events
 * of a key are handled in queue order. Instances share the partitions: every instance consumes
 * `<queue>.members`, whose consumer count is how many there are, and each keeps about
 * partitions / instances of them. It hands surplus partitions back when instances join (after
 * finishing the event in hand) and takes free ones when instances leave or die: a partition
 * whose owner's connection dropped is free at once, and the broker gives its unacknowledged
 * events back in order to the next owner.
 */
export class PartitionedConsumer {
  private readonly logger = new Logger('SyncConsumer');
  private control?: Channel;
  private readonly owned = new Map<number, Partition>();
  private readonly claimOrder: number[];
  private stopped = true;
  private timer?: NodeJS.Timeout;
  private ticking?: Promise<void>;
  private readonly queueArgs: QueueArguments;
  private lastError?: string;

  constructor(
    readonly definition: ConsumerDefinition,
    private readonly connection: AmqpConnectionManager,
    private readonly processor: EventProcessor,
    private readonly settings: PartitionSettings,
  ) {
    this.queueArgs = new QueueArguments(settings.queueType, settings.queueMode);
    const count = definition.partitions!;
    // Instances starting together try different partitions first.
    const offset = Math.floor(Math.random() * count);
    this.claimOrder = Array.from({ length: count }, (_, i) => (i + offset) % count);
  }

  /** Declares the topology now (a mismatch fails startup), takes this instance's share, and keeps rebalancing. */
  async start(): Promise<void> {
    this.stopped = false;
    this.connection.on('connect', this.onConnect);
    const current = this.connection.connection;
    if (current) await this.openControl(current);
    await this.rebalance();
    this.timer = setInterval(() => void this.rebalance(), this.settings.rebalanceIntervalMs);
  }

  private readonly onConnect = (): void => {
    void this.rebalance();
  };

  private async openControl(connection: Connection): Promise<Channel> {
    const channel = await connection.createChannel();
    // An error while declaring rejects the declare and is reported from there.
    channel.on('error', (error: Error) => {
      if (this.control === channel) this.logger.error(`Control channel of ${this.definition.queue} failed: ${error.message}`);
    });
    channel.on('close', () => {
      if (this.control === channel) this.control = undefined;
    });
    try {
      await declarePartitionTopology(channel, this.settings.exchange, this.queueArgs, {
        queue: this.definition.queue,
        eventTypes: this.definition.eventTypes,
        partitions: this.definition.partitions!,
      });
      // Counted, never fed: nothing is published to the members queue.
      await channel.consume(membersQueueName(this.definition.queue), () => undefined, { noAck: true });
    } catch (error) {
      await channel.close().catch(() => undefined);
      this.queueArgs.keepModeOrThrow(error);
      return this.openControl(connection);
    }
    for (const warning of this.queueArgs.takeWarnings()) this.logger.warn(warning);
    this.control = channel;
    this.logger.log(
      `${this.definition.label} consumes ${this.definition.partitions} partitions of ${this.definition.queue} (${this.definition.eventTypes.join(', ')})`,
    );
    return channel;
  }

  /** One rebalancing pass at a time; a pass that fails (broker away) is simply tried again later. */
  private rebalance(): Promise<void> {
    this.ticking ??= this.rebalanceOnce()
      .catch((error: Error) => {
        if (this.lastError !== error.message) this.logger.warn(`${this.definition.label}: rebalancing partitions failed (${error.message}); trying again`);
        this.lastError = error.message;
      })
      .finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async rebalanceOnce(): Promise<void> {
    const connection = this.connection.connection;
    if (this.stopped || !connection) return;
    const control = this.control ?? (await this.openControl(connection));
    const count = this.definition.partitions!;
    const { consumerCount } = await control.checkQueue(membersQueueName(this.definition.queue));
    const share = Math.ceil(count / Math.max(1, consumerCount));
    for (const index of [...this.owned.keys()].sort((a, b) => b - a)) {
      if (this.owned.size <= share) break;
      await this.release(index, 'another instance joined');
    }
    for (const index of this.claimOrder) {
      if (this.stopped || this.owned.size >= share) break;
      if (this.owned.has(index)) continue;
      const { consumerCount: owners } = await control.checkQueue(partitionQueueName(this.definition.queue, index));
      if (owners === 0) await this.claim(connection, index);
    }
    this.lastError = undefined;
  }

  private async claim(connection: Connection, index: number): Promise<void> {
    const partition = new Partition(index, partitionQueueName(this.definition.queue, index), this.definition, this.processor, (lost) => {
      if (this.owned.get(index) !== lost) return;
      this.owned.delete(index);
      if (!this.stopped) this.logger.warn(`${this.definition.label}: lost partition ${index} (channel closed); it is free for any instance`);
    });
    if (!(await partition.open(connection, this.settings.prefetch))) return;
    this.owned.set(index, partition);
    this.logger.log(`${this.definition.label} took partition ${index} of ${this.definition.partitions} (${partition.queue})`);
  }

  private async release(index: number, why: string): Promise<void> {
    const partition = this.owned.get(index);
    if (!partition) return;
    this.owned.delete(index);
    await partition.release();
    this.logger.log(`${this.definition.label} handed partition ${index} back (${why})`);
  }

  /** Stops taking deliveries, finishes (bounded) the events in hand, and hands every partition back. */
  async stop(timeoutMs: number): Promise<boolean> {
    this.stopped = true;
    clearInterval(this.timer);
    this.connection.removeListener('connect', this.onConnect);
    await this.ticking;
    const partitions = [...this.owned.values()];
    this.owned.clear();
    const finished = await Promise.all(partitions.map((partition) => partition.release(timeoutMs)));
    return finished.every(Boolean);
  }

  get status(): ConsumerStatus {
    const state = this.stopped ? 'stopped' : this.control ? 'consuming' : 'recovering';
    return {
      consumer: this.definition.consumer,
      queue: this.definition.queue,
      state,
      inFlight: this.inFlight,
      lastError: this.lastError,
      partitions: [...this.owned.keys()].sort((a, b) => a - b),
    };
  }

  get inFlight(): number {
    let running = 0;
    for (const partition of this.owned.values()) running += partition.busy ? 1 : 0;
    return running;
  }

  async close(): Promise<void> {
    await this.stop(0);
    const control = this.control;
    this.control = undefined;
    await control?.close().catch(() => undefined);
  }
}

/** One partition this instance owns: an exclusive consumer and one event at a time. */
class Partition {
  private channel?: ConfirmChannel;
  private consumerTag?: string;
  private readonly waiting: ConsumeMessage[] = [];
  private running?: Promise<void>;
  private readonly releasing = new AbortController();

  constructor(
    readonly index: number,
    readonly queue: string,
    private readonly definition: ConsumerDefinition,
    private readonly processor: EventProcessor,
    private readonly onLost: (partition: Partition) => void,
  ) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Takes the partition; false when another instance got there first. */
  async open(connection: Connection, prefetch: number): Promise<boolean> {
    const channel = await connection.createConfirmChannel();
    channel.setMaxListeners(0);
    channel.on('error', () => undefined);
    channel.on('close', () => this.lost(channel));
    try {
      await channel.prefetch(prefetch, false);
      // Deliveries can arrive in the same read as consume-ok, before the consume call resolves.
      this.channel = channel;
      const { consumerTag } = await channel.consume(this.queue, (message) => (message ? this.accept(channel, message) : void channel.close().catch(() => undefined)), {
        noAck: false,
        exclusive: true,
      });
      this.consumerTag = consumerTag;
      return true;
    } catch (error) {
      this.channel = undefined;
      await channel.close().catch(() => undefined);
      // Another instance consumes it (ACCESS_REFUSED: in exclusive use).
      if (/ACCESS[_-]REFUSED|exclusive/i.test((error as Error).message)) return false;
      throw error;
    }
  }

  private accept(channel: ConfirmChannel, message: ConsumeMessage): void {
    if (channel !== this.channel) return;
    this.waiting.push(message);
    this.pump(channel);
  }

  private pump(channel: ConfirmChannel): void {
    if (this.running || channel !== this.channel) return;
    const message = this.waiting.shift();
    if (!message) return;
    this.running = this.processor.process(channel, message, this.definition, this.releasing.signal).finally(() => {
      this.running = undefined;
      this.pump(channel);
    });
  }

  private lost(channel: ConfirmChannel): void {
    if (this.channel !== channel) return;
    this.channel = undefined;
    // The broker gives the unacknowledged ones back, in order, to the next owner.
    this.waiting.length = 0;
    this.releasing.abort();
    this.onLost(this);
  }

  /**
   * Cancels the consumer, gives back the events not started, lets the one in hand finish (an
   * in-place retry wait is cut short and its event given back), then closes the channel.
   */
  async release(timeoutMs = Number.POSITIVE_INFINITY): Promise<boolean> {
    const channel = this.channel;
    this.channel = undefined;
    if (!channel) return true;
    if (this.consumerTag) await channel.cancel(this.consumerTag).catch(() => undefined);
    for (const message of this.waiting.splice(0)) {
      try {
        channel.nack(message, false, true);
      } catch {
        // Closed channel: the broker requeues by itself.
      }
    }
    this.releasing.abort();
    let finished = true;
    if (this.running) {
      let timer: NodeJS.Timeout | undefined;
      finished = await Promise.race([
        this.running.then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), Math.min(timeoutMs, 2 ** 31 - 1)))),
      ]);
      clearTimeout(timer);
    }
    await channel.close().catch(() => undefined);
    return finished;
  }
}
