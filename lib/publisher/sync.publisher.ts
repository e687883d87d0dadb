import { Inject, Injectable, Logger } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { EventEmitterPort } from '../decorators/publishes-event.decorator.js';
import type { PublishOptions } from '../interfaces/publish-options.interface.js';
import type { PublishesEventMetadata } from '../interfaces/publishes-event-options.interface.js';
import type { SyncEvent } from '../interfaces/sync-event.interface.js';
import type { ResolvedSyncOptions } from '../interfaces/sync-module-options.interface.js';
import { assertEventType } from '../options/event-type.js';
import { SyncOutbox } from '../outbox/sync-outbox.js';
import { SYNC_RESOLVED_OPTIONS } from '../sync.module-definition.js';
import { SyncClient } from '../transport/sync.client.js';
import { buildEnvelope } from './envelope.js';

/**
 * Publishes events, on one of two paths:
 * - inside `transaction()` or an `@OnEvent` handler, into the outbox table in that same
 *   transaction: the event exists exactly when the change does, and the relay publishes it
 *   after commit;
 * - elsewhere, straight to RabbitMQ (or through the outbox with `outbox.outsideTransaction:
 *   'outbox'`): `publish()` resolves once the broker has confirmed the event, waits up to
 *   `publishTimeout` while it is unreachable, then rejects with `PublishTimeoutError`.
 */
@Injectable()
export class SyncPublisher implements EventEmitterPort {
  private readonly logger = new Logger('SyncPublisher');
  private readonly untracked = new Set<Promise<unknown>>();

  constructor(
    private readonly client: SyncClient,
    private readonly outbox: SyncOutbox,
    @Inject(SYNC_RESOLVED_OPTIONS) private readonly options: ResolvedSyncOptions,
  ) {}

  /**
   * Resolves with the envelope: in a transaction once it is written to the outbox, otherwise
   * once the broker confirmed it (or, with `outsideTransaction: 'outbox'`, once it is stored).
   */
  publish<T>(eventType: string, data: T, options: PublishOptions = {}): Promise<SyncEvent<T>> {
    const scope = this.outbox.scope();
    if (!scope && !(this.options.outbox.outsideTransaction === 'outbox' && this.outbox.available)) {
      return this.client.publish(eventType, data, options);
    }
    assertEventType(eventType, 'SyncPublisher.publish');
    const envelope = buildEnvelope(this.options.service, eventType, data, options);
    if (scope) return this.outbox.write(scope, envelope, options.headers) as Promise<SyncEvent<T>>;
    return this.outbox.transaction(() => this.outbox.write(this.outbox.scope()!, envelope, options.headers)) as Promise<SyncEvent<T>>;
  }

  /**
   * Runs `work` in one TypeORM transaction on the module's DataSource. Events published inside
   * it, by `publish()` or a `@PublishesEvent` method however deep in the call, are written to
   * the outbox in that transaction: on commit they are dispatched at once, on rollback they
   * never existed. Called inside another such transaction (or a handler), it joins that one.
   */
  transaction<T>(work: (manager: EntityManager) => Promise<T>): Promise<T> {
    return this.outbox.transaction(work);
  }

  /** @internal The path of `@PublishesEvent`. */
  publishResult(metadata: PublishesEventMetadata, result: unknown, args: unknown[]): Promise<SyncEvent> {
    const { eventType, options } = metadata;
    const data = options.map ? options.map(result, args) : result;
    const key = options.key?.(result, args);
    const sequence = options.sequence?.(result, args);
    return this.publish(eventType, data, { key: key === undefined || key === null ? undefined : String(key), sequence: sequence ?? undefined });
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
