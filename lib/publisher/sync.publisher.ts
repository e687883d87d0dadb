import { Injectable, Logger } from '@nestjs/common';
import type { EventEmitterPort } from '../decorators/publishes-event.decorator.js';
import type { PublishOptions } from '../interfaces/publish-options.interface.js';
import type { PublishesEventMetadata } from '../interfaces/publishes-event-options.interface.js';
import type { SyncEvent } from '../interfaces/sync-event.interface.js';
import { SyncClient } from '../transport/sync.client.js';

/**
 * Publishes events. `publish()` resolves with the envelope once RabbitMQ has confirmed it;
 * while the broker is unreachable it waits up to `publishTimeout`, then rejects with
 * `PublishTimeoutError`. It never resolves for an event that was not confirmed.
 */
@Injectable()
export class SyncPublisher implements EventEmitterPort {
  private readonly logger = new Logger('SyncPublisher');
  private readonly untracked = new Set<Promise<unknown>>();

  constructor(private readonly client: SyncClient) {}

  publish<T>(eventType: string, data: T, options?: PublishOptions): Promise<SyncEvent<T>> {
    return this.client.publish(eventType, data, options);
  }

  /** @internal The path of `@PublishesEvent`. */
  publishResult(metadata: PublishesEventMetadata, result: unknown, args: unknown[]): Promise<SyncEvent> {
    const { eventType, options } = metadata;
    const data = options.map ? options.map(result, args) : result;
    const key = options.key?.(result, args);
    return this.publish(eventType, data, { key: key === undefined || key === null ? undefined : String(key) });
  }

  /** @internal A sync method's publish runs on after it returned: log its failure, and let shutdown wait for it. */
  track(pending: Promise<unknown>, metadata: PublishesEventMetadata): void {
    const tracked = pending
      .catch((error: Error) => this.logger.error(`@PublishesEvent('${metadata.eventType}') of a synchronous method failed: ${error.message}`))
      .finally(() => this.untracked.delete(tracked));
    this.untracked.add(tracked);
  }

  /** Waits until every publish started so far is confirmed or has failed. */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.untracked]);
    await this.client.flush();
  }
}
