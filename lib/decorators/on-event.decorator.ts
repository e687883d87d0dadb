import { SetMetadata } from '@nestjs/common';
import { InvalidSyncOptionsError } from '../errors/invalid-sync-options.error.js';
import { InvalidDecoratorUsageError } from '../errors/invalid-decorator-usage.error.js';
import type { OnEventMetadata, OnEventOptions } from '../interfaces/on-event-options.interface.js';
import { consumerNameProblem } from '../options/consumer-name.js';
import { assertEventType } from '../options/event-type.js';
import { resolveHandlerTimeout } from '../options/resolve-options.js';
import { resolveRetryPolicy } from '../options/retry-policy.js';
import { MAX_PARTITIONS, ON_EVENT_METADATA } from '../sync.constants.js';

/**
 * Subscribes a provider method to one or more event types. The method gets `(data, ctx)` for
 * every such event, once in effect, from its own durable queue `<service>.<consumer>` with
 * retry queues and a dead-letter queue.
 */
export function OnEvent(eventType: string | string[], options: OnEventOptions = {}): MethodDecorator {
  const eventTypes = Array.isArray(eventType) ? eventType : [eventType];
  if (eventTypes.length === 0) throw new InvalidDecoratorUsageError('@OnEvent needs at least one event type, e.g. @OnEvent(\'UserCreated\').');
  eventTypes.forEach((type) => assertEventType(type, '@OnEvent'));
  validateOptions(options);
  const metadata: OnEventMetadata = { eventTypes: [...new Set(eventTypes)], options };
  return (target, propertyKey, descriptor) => {
    if (typeof descriptor.value !== 'function') {
      throw new InvalidDecoratorUsageError(`@OnEvent can only decorate methods; ${String(propertyKey)} is not one.`);
    }
    SetMetadata(ON_EVENT_METADATA, metadata)(target, propertyKey, descriptor);
  };
}

/** The same decorator under a name that does not clash with `@nestjs/event-emitter`'s `OnEvent`. */
export const OnSyncEvent = OnEvent;

function validateOptions(options: OnEventOptions): void {
  const problem = options.consumer === undefined ? undefined : consumerNameProblem(options.consumer);
  if (problem) throw new InvalidDecoratorUsageError(`@OnEvent option ${problem}.`);
  if (options.concurrency !== undefined && (!Number.isInteger(options.concurrency) || options.concurrency < 1 || options.concurrency > 1000)) {
    throw new InvalidDecoratorUsageError(`@OnEvent option concurrency must be an integer from 1 to 1000 (got ${JSON.stringify(options.concurrency)}).`);
  }
  if (options.batchSize !== undefined && (!Number.isInteger(options.batchSize) || options.batchSize < 1 || options.batchSize > 1000)) {
    throw new InvalidDecoratorUsageError(`@OnEvent option batchSize must be an integer from 1 to 1000 (got ${JSON.stringify(options.batchSize)}).`);
  }
  if (options.parallel !== undefined && typeof options.parallel !== 'boolean') {
    throw new InvalidDecoratorUsageError(`@OnEvent option parallel must be true or false (got ${JSON.stringify(options.parallel)}).`);
  }
  if (options.partitions !== undefined) {
    if (!Number.isInteger(options.partitions) || options.partitions < 2 || options.partitions > MAX_PARTITIONS) {
      throw new InvalidDecoratorUsageError(`@OnEvent option partitions must be an integer from 2 to ${MAX_PARTITIONS} (got ${JSON.stringify(options.partitions)}).`);
    }
    for (const option of ['concurrency', 'batchSize', 'parallel'] as const) {
      if (options[option] !== undefined) {
        throw new InvalidDecoratorUsageError(`@OnEvent option ${option} cannot be combined with partitions: each partition runs one event at a time, in order. Use more partitions for more parallelism.`);
      }
    }
  }
  if (options.ordering !== undefined && options.ordering !== 'key') {
    throw new InvalidDecoratorUsageError(`@OnEvent option ordering must be 'key' (got ${JSON.stringify(options.ordering)}).`);
  }
  try {
    if (options.retry !== undefined) resolveRetryPolicy(options.retry, 'retry');
    if (options.handlerTimeout !== undefined) resolveHandlerTimeout(options.handlerTimeout, 'handlerTimeout', false);
  } catch (error) {
    if (!(error instanceof InvalidSyncOptionsError)) throw error;
    throw new InvalidDecoratorUsageError(`@OnEvent option \`${error.option}\` ${error.problem}. ${error.fix}`);
  }
}
