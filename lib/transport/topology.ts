import type { Channel } from 'amqplib';
import { TopologyMismatchError } from '../errors/topology-mismatch.error.js';
import type { QueueMode, QueueType } from '../interfaces/sync-module-options.interface.js';
import { HEADER, KEY_BUCKETS } from '../sync.constants.js';

/** What RabbitMQ needs to know about one handler's queues. */
export interface ConsumerTopology {
  queue: string;
  eventTypes: string[];
  retryDelaysMs: number[];
}

export const retryQueueName = (queue: string, delayMs: number): string => `${queue}.retry.${delayMs}`;
export const deadLetterQueueName = (queue: string): string => `${queue}.dlq`;
export const partitionQueueName = (queue: string, index: number): string => `${queue}.p${index}`;
/** The headers exchange that spreads a partitioned handler's events over its partition queues. */
export const partitionExchangeName = (queue: string): string => `${queue}.partitions`;
/**
 * Where events without a key bucket go (the partition exchange's alternate exchange): partition 0.
 * Its name carries the partition count: RabbitMQ checks an existing exchange's
 * `alternate-exchange` on every declare, so a changed count fails with TopologyMismatchError.
 */
export const unkeyedExchangeName = (queue: string, partitions: number): string => `${queue}.unkeyed.${partitions}`;
/** Every instance of a partitioned handler consumes it: its consumer count is the number of instances. */
export const membersQueueName = (queue: string): string => `${queue}.members`;

/**
 * The arguments of the queues one handler declares. Classic queues are lazy by default: RabbitMQ
 * before 3.12 keeps a classic queue's messages in memory too, persistent or not, and pays for it
 * in garbage collection on every publish and, with a backlog, in memory that can raise the
 * broker's memory alarm, which blocks every publisher. A lazy queue writes them to disk at once,
 * as RabbitMQ 3.12 and later do for every classic queue (they ignore the mode).
 *
 * RabbitMQ refuses to declare an existing queue with another `x-queue-mode`, and cannot change
 * it: a queue created before (without the mode, or with another) keeps its mode, see keepMode.
 */
export class QueueArguments {
  /** Queues found to exist with another mode than the option's: declared with their own from then on. */
  private readonly kept = new Map<string, string | undefined>();
  /** Warnings for kept modes not reported yet: see takeWarnings. */
  private readonly unreported: string[] = [];

  constructor(
    readonly queueType: QueueType,
    private readonly queueMode: QueueMode,
  ) {}

  /** The arguments of one of the handler's durable queues (beside its dead-lettering ones). */
  of(queue: string): Record<string, unknown> {
    if (this.queueType === 'quorum') return { 'x-queue-type': 'quorum' };
    const mode = this.kept.has(queue) ? this.kept.get(queue) : this.queueMode === 'lazy' ? 'lazy' : undefined;
    return mode === undefined ? {} : { 'x-queue-mode': mode };
  }

  /**
   * After a failed declare: returns when the queue keeps its own mode (declare again), else
   * throws the error, explained (see explainDeclareError).
   */
  keepModeOrThrow(error: unknown): void {
    const explained = explainDeclareError(error);
    const kept = this.keepMode(explained);
    if (!kept) throw explained;
    this.unreported.push(keptModeWarning(kept));
  }

  /**
   * The warnings for queues that keep their own mode, each once, to log after a declare with that
   * mode succeeded: a queue that differs in more than its mode (say, single active consumer,
   * which RabbitMQ checks after the mode) then fails with the real mismatch and no warning
   * about its mode before it.
   */
  takeWarnings(): string[] {
    return this.unreported.splice(0);
  }

  /**
   * After a declare refused for its `x-queue-mode` alone: the queue keeps the mode it was created
   * with, and is declared with that from now on. Returns the mode kept (`undefined`: none given,
   * RabbitMQ's default), or false when the error is not such a refusal or the queue was already
   * declared with its own mode (then it is a real mismatch).
   */
  keepMode(error: unknown): { queue: string; mode: string | undefined } | false {
    if (!(error instanceof TopologyMismatchError) || error.kind !== 'queue' || error.argument !== 'x-queue-mode') return false;
    if (this.queueType === 'quorum' || this.kept.has(error.entity)) return false;
    // "... but current is none", "... current is the value 'default' of type 'longstr'", "... current is 'default'"
    const current = /current is (?:none|the value '([^']*)'|'([^']*)')/.exec(error.message);
    if (!current) return false;
    const mode = current[1] ?? current[2];
    this.kept.set(error.entity, mode);
    return { queue: error.entity, mode };
  }
}

/** What to log when an existing queue keeps its own mode (see QueueArguments.keepMode). */
export function keptModeWarning(kept: { queue: string; mode: string | undefined }): string {
  const mode = kept.mode === undefined ? "RabbitMQ's default mode (no x-queue-mode)" : `mode '${kept.mode}'`;
  const pattern = `^${kept.queue.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;
  return (
    `Queue "${kept.queue}" already exists in ${mode}, other than this service's queueMode; it keeps that mode ` +
    `(RabbitMQ cannot change the x-queue-mode of an existing queue). A policy changes it in place: ` +
    `rabbitmqctl set_policy --apply-to queues <name> '${pattern}' '{"queue-mode":"lazy"}'`
  );
}

/** Every queue and exchange of a partitioned handler besides the topic exchange (to drain or delete them). */
export function partitionTopologyNames(queue: string, partitions: number): { partitionQueues: string[]; queues: string[]; exchanges: string[] } {
  const partitionQueues = Array.from({ length: partitions }, (_, index) => partitionQueueName(queue, index));
  return {
    partitionQueues,
    queues: [...partitionQueues, deadLetterQueueName(queue), membersQueueName(queue)],
    exchanges: [partitionExchangeName(queue), unkeyedExchangeName(queue, partitions)],
  };
}

/** A partitioned handler's queues and how events reach them. */
export interface PartitionTopology {
  queue: string;
  eventTypes: string[];
  partitions: number;
}

/**
 * Declares a partitioned handler's topology, plugin-free: the events of its types go from the
 * topic exchange to a headers exchange that routes on `sync-key-bucket` (0–255): bucket b goes to
 * partition b % partitions. Events without a bucket (no key, foreign producers) go through the
 * alternate exchange to partition 0. Changing the partition count fails with TopologyMismatchError
 * (see unkeyedExchangeName) instead of routing one bucket to two partitions.
 * Also the DLQ and the members queue.
 */
export async function declarePartitionTopology(channel: Channel, exchange: string, queueArgs: QueueArguments, topology: PartitionTopology): Promise<void> {
  const { queue, partitions } = topology;
  const router = partitionExchangeName(queue);
  const unkeyed = unkeyedExchangeName(queue, partitions);
  await channel.assertExchange(exchange, 'topic', { durable: true });
  await channel.assertExchange(unkeyed, 'fanout', { durable: true });
  await channel.assertExchange(router, 'headers', { durable: true, alternateExchange: unkeyed });
  for (const partitionQueue of partitionTopologyNames(queue, partitions).partitionQueues) {
    await channel.assertQueue(partitionQueue, { durable: true, arguments: queueArgs.of(partitionQueue) });
  }
  for (let bucket = 0; bucket < KEY_BUCKETS; bucket++) {
    await channel.bindQueue(partitionQueueName(queue, bucket % partitions), router, '', { 'x-match': 'all', [HEADER.keyBucket]: String(bucket) });
  }
  await channel.bindQueue(partitionQueueName(queue, 0), unkeyed, '');
  for (const eventType of topology.eventTypes) await channel.bindExchange(router, exchange, eventType);
  await channel.assertQueue(deadLetterQueueName(queue), { durable: true, arguments: queueArgs.of(deadLetterQueueName(queue)) });
  await channel.assertQueue(membersQueueName(queue), { durable: false, autoDelete: true });
}

/**
 * Declares the exchange, the handler's queue and bindings, one TTL queue per distinct retry
 * delay that dead-letters back to exactly this queue through the default exchange, and the DLQ.
 */
export async function declareConsumerTopology(channel: Channel, exchange: string, queueArgs: QueueArguments, topology: ConsumerTopology): Promise<void> {
  await channel.assertExchange(exchange, 'topic', { durable: true });
  await channel.assertQueue(topology.queue, { durable: true, arguments: queueArgs.of(topology.queue) });
  for (const eventType of topology.eventTypes) await channel.bindQueue(topology.queue, exchange, eventType);
  // Quorum queues dead-letter at-most-once by default; a retry must not vanish on its way back.
  const safeDeadLettering = queueArgs.queueType === 'quorum' ? { 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' } : {};
  for (const delay of new Set(topology.retryDelaysMs)) {
    const retryQueue = retryQueueName(topology.queue, delay);
    await channel.assertQueue(retryQueue, {
      durable: true,
      arguments: { ...queueArgs.of(retryQueue), ...safeDeadLettering, 'x-message-ttl': delay, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': topology.queue },
    });
  }
  await channel.assertQueue(deadLetterQueueName(topology.queue), { durable: true, arguments: queueArgs.of(deadLetterQueueName(topology.queue)) });
}

const INEQUIVALENT = /inequivalent arg '([^']+)' for (queue|exchange) '([^']+)'/;

/** Turns RabbitMQ's PRECONDITION_FAILED on a declare into an error that says what to do. */
export function explainDeclareError(error: unknown): unknown {
  const message = error instanceof Error ? error.message : String(error);
  const match = INEQUIVALENT.exec(message);
  if (!match) return error;
  const brokerMessage = message.replace(/^.*PRECONDITION_FAILED - /, '').replace(/"$/, '');
  return new TopologyMismatchError(match[2] as 'queue' | 'exchange', match[3], match[1], brokerMessage);
}
