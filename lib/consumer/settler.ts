import type { ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import { HEADER, MAX_STACK_HEADER_LENGTH } from '../sync.constants.js';
import { deadLetterQueueName, retryQueueName } from '../transport/topology.js';
import { DeliveryTracker } from './delivery-tracker.js';

export type DeadLetterReason = 'exhausted' | 'non-retryable' | 'malformed' | 'too-large' | 'unhandled-event-type' | 'unordered';

export interface Failure {
  name: string;
  message: string;
  stack?: string;
}

/** The retry or dead-letter queue a copy was sent to does not exist (deleted under us). */
export class CopyReturnedError extends Error {
  constructor(readonly queue: string) {
    super(`the copy sent to ${queue} was returned: the queue does not exist`);
    this.name = 'CopyReturnedError';
  }
}

export function failureOf(error: unknown): Failure {
  if (error instanceof Error) return { name: error.name, message: error.message, stack: error.stack };
  return { name: typeof error, message: String(error) };
}

/**
 * Decides nothing, only carries out: ack, send to a retry tier, or dead-letter. Every copy is
 * published with confirms before the original is acked, so a crash in between redelivers
 * (and the dedupe absorbs it) instead of losing the message.
 */
export class Settler {
  private readonly trackers = new WeakMap<ConfirmChannel, DeliveryTracker>();

  /** Starts tracking a channel's deliveries (every one must be reported as it arrives), so `ackAll` can use multiple acks. */
  track(channel: ConfirmChannel): DeliveryTracker {
    const tracker = new DeliveryTracker();
    this.trackers.set(channel, tracker);
    return tracker;
  }

  ack(channel: ConfirmChannel, message: ConsumeMessage): void {
    this.trackers.get(channel)?.settled(message.fields.deliveryTag);
    try {
      channel.ack(message);
    } catch {
      // The channel closed under us: the broker redelivers the message and the dedupe absorbs it.
    }
  }

  /**
   * Acks the messages of a committed batch: one multiple ack for those below which every
   * delivery of the channel is settled, single acks for the rest.
   */
  ackAll(channel: ConfirmChannel, messages: ConsumeMessage[]): void {
    const tracker = this.trackers.get(channel);
    if (!tracker) {
      for (const message of messages) this.ack(channel, message);
      return;
    }
    const upTo = tracker.ackable(messages.map((message) => message.fields.deliveryTag));
    try {
      if (upTo > 0) channel.ack({ fields: { deliveryTag: upTo } } as ConsumeMessage, true);
      for (const message of messages) if (message.fields.deliveryTag > upTo) channel.ack(message);
    } catch {
      // The channel closed under us: the broker redelivers the messages and the dedupe absorbs them.
    }
  }

  /** Gives the message back to the broker right away (shutdown, or a copy that could not be published). */
  requeue(channel: ConfirmChannel, message: ConsumeMessage): void {
    this.trackers.get(channel)?.settled(message.fields.deliveryTag);
    try {
      channel.nack(message, false, true);
    } catch {
      // Closed channel: the broker requeues unacked messages by itself.
    }
  }

  async retry(channel: ConfirmChannel, message: ConsumeMessage, queue: string, nextAttempt: number, delayMs: number, failure: Failure): Promise<void> {
    const now = new Date().toISOString();
    const headers = {
      ...this.originHeaders(message),
      [HEADER.attempt]: nextAttempt,
      [HEADER.firstFailureAt]: message.properties.headers?.[HEADER.firstFailureAt] ?? now,
      [HEADER.lastFailureAt]: now,
      [HEADER.errorName]: failure.name,
      [HEADER.errorMessage]: truncate(failure.message, MAX_STACK_HEADER_LENGTH),
    };
    await this.publishCopy(channel, message, retryQueueName(queue, delayMs), headers);
    this.ack(channel, message);
  }

  async deadLetter(channel: ConfirmChannel, message: ConsumeMessage, queue: string, consumer: string, reason: DeadLetterReason, attempts: number, failure: Failure): Promise<void> {
    const now = new Date().toISOString();
    const headers = {
      ...this.originHeaders(message),
      [HEADER.reason]: reason,
      [HEADER.errorName]: failure.name,
      [HEADER.errorMessage]: truncate(failure.message, MAX_STACK_HEADER_LENGTH),
      [HEADER.errorStack]: truncate(failure.stack ?? '', MAX_STACK_HEADER_LENGTH),
      [HEADER.consumer]: consumer,
      [HEADER.attempts]: attempts,
      [HEADER.firstFailureAt]: message.properties.headers?.[HEADER.firstFailureAt] ?? now,
      [HEADER.lastFailureAt]: now,
    };
    await this.publishCopy(channel, message, deadLetterQueueName(queue), headers);
    this.ack(channel, message);
  }

  /** Where the message first came from: kept across retry hops, whose exchange is the default one. */
  private originHeaders(message: ConsumeMessage): Record<string, unknown> {
    const headers = safeHeaders(message.properties.headers);
    headers[HEADER.originalExchange] ??= message.fields.exchange;
    headers[HEADER.originalRoutingKey] ??= message.fields.routingKey;
    return headers;
  }

  private publishCopy(channel: ConfirmChannel, message: ConsumeMessage, queue: string, headers: Record<string, unknown>): Promise<void> {
    const { properties } = message;
    const options: Options.Publish = {
      persistent: true,
      mandatory: true,
      contentType: properties.contentType,
      contentEncoding: properties.contentEncoding,
      messageId: properties.messageId,
      correlationId: properties.correlationId,
      type: properties.type,
      appId: properties.appId,
      timestamp: properties.timestamp,
      headers,
    };
    // A mandatory publish that no queue takes comes back as basic.return before its confirm.
    let returned = false;
    const onReturn = (back: ConsumeMessage) => {
      if (back.fields.routingKey === queue && back.properties.messageId === options.messageId && back.properties.headers?.[HEADER.lastFailureAt] === headers[HEADER.lastFailureAt]) {
        returned = true;
      }
    };
    channel.on('return', onReturn);
    return new Promise<void>((resolve, reject) => {
      try {
        channel.publish('', queue, message.content, options, (error) => {
          if (error) reject(error instanceof Error ? error : new Error(String(error)));
          else if (returned) reject(new CopyReturnedError(queue));
          else resolve();
        });
      } catch (error) {
        reject(error);
      }
    }).finally(() => channel.off('return', onReturn));
  }
}

/** Copies headers, dropping broker-owned `x-` ones (x-death and friends) that must not be re-published. */
function safeHeaders(headers: Record<string, unknown> | undefined): Record<string, unknown> {
  const copy: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (!name.startsWith('x-')) copy[name] = value;
  }
  return copy;
}

function truncate(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
