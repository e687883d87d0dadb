import type { Channel } from 'amqplib';
import { TopologyMismatchError } from '../errors/topology-mismatch.error.js';
import type { QueueType } from '../interfaces/sync-module-options.interface.js';

/** What RabbitMQ needs to know about one handler's queues. */
export interface ConsumerTopology {
  queue: string;
  eventTypes: string[];
  retryDelaysMs: number[];
}

export const retryQueueName = (queue: string, delayMs: number): string => `${queue}.retry.${delayMs}`;
export const deadLetterQueueName = (queue: string): string => `${queue}.dlq`;

/**
 * Declares the exchange, the handler's queue and bindings, one TTL queue per distinct retry
 * delay that dead-letters back to exactly this queue through the default exchange, and the DLQ.
 */
export async function declareConsumerTopology(channel: Channel, exchange: string, queueType: QueueType, topology: ConsumerTopology): Promise<void> {
  const typeArgs = queueType === 'quorum' ? { 'x-queue-type': 'quorum' } : {};
  await channel.assertExchange(exchange, 'topic', { durable: true });
  await channel.assertQueue(topology.queue, { durable: true, arguments: { ...typeArgs } });
  for (const eventType of topology.eventTypes) await channel.bindQueue(topology.queue, exchange, eventType);
  // Quorum queues dead-letter at-most-once by default; a retry must not vanish on its way back.
  const safeDeadLettering = queueType === 'quorum' ? { 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' } : {};
  for (const delay of new Set(topology.retryDelaysMs)) {
    await channel.assertQueue(retryQueueName(topology.queue, delay), {
      durable: true,
      arguments: { ...typeArgs, ...safeDeadLettering, 'x-message-ttl': delay, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': topology.queue },
    });
  }
  await channel.assertQueue(deadLetterQueueName(topology.queue), { durable: true, arguments: { ...typeArgs } });
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
