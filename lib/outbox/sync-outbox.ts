import { Injectable } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { EventTooLargeError } from '../errors/event-too-large.error.js';
import { OutboxUnavailableError } from '../errors/outbox-unavailable.error.js';
import type { PublishOptions } from '../interfaces/publish-options.interface.js';
import type { SyncEvent } from '../interfaces/sync-event.interface.js';
import { envelopeJson } from '../publisher/envelope.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../sync.constants.js';
import type { SyncMetrics } from '../sync.metrics.js';
import type { OutboxRelay, OutboxRelayStatus } from './outbox.relay.js';
import { currentScope, type OutboxScope, runInScope } from './outbox-scope.js';
import type { OutboxStore } from './outbox.store.js';

/**
 * The transactional outbox of this service: events written in the same transaction as the
 * change that caused them, published by the relay after commit. Inject it to read the backlog
 * and the relay's status (health checks), or to wake the relay.
 */
@Injectable()
export class SyncOutbox {
  private store?: OutboxStore;
  private relay?: OutboxRelay;
  private metrics?: SyncMetrics;
  private maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;

  /** @internal Wired by the module once the DataSource is known. */
  attach(store: OutboxStore, relay: OutboxRelay | undefined, metrics: SyncMetrics, maxMessageBytes: number): void {
    this.store = store;
    this.relay = relay;
    this.metrics = metrics;
    this.maxMessageBytes = maxMessageBytes;
  }

  /** Events of this service written to the outbox and not yet published. */
  backlog(): Promise<number> {
    return this.requireStore().backlog();
  }

  /** The relay of this instance: running, failures in a row, last error, last publish. */
  status(): OutboxRelayStatus {
    return this.relay?.status() ?? { running: false, consecutiveFailures: 0 };
  }

  /** Asks the relay to publish what is due now instead of at its next poll. */
  wake(): void {
    this.relay?.wake();
  }

  /** @internal The transaction the caller runs in, if publishes there belong in the outbox. */
  scope(): OutboxScope | undefined {
    return this.store ? currentScope(this.store.gate.dataSource) : undefined;
  }

  /** @internal Whether the outbox can take writes (enabled, and the module initialised). */
  get available(): boolean {
    return this.store !== undefined;
  }

  /**
   * @internal Runs `work` in a new transaction (or joins the one the caller is in) with
   * publishes going to the outbox; wakes the relay once a transaction with events committed.
   */
  async transaction<T>(work: (manager: EntityManager) => Promise<T>): Promise<T> {
    const store = this.requireStore();
    const joined = this.scope();
    if (joined) return work(joined.manager);
    const { result, written } = await store.gate.transaction((manager) => runInScope(store.gate.dataSource, manager, () => work(manager)));
    if (written > 0) this.relay?.wake();
    return result;
  }

  /** @internal Runs a handler's work in its dedupe transaction so its publishes join it. */
  async runHandler<T>(manager: EntityManager, work: () => Promise<T>, closed?: () => Error | undefined): Promise<{ result: T; written: number }> {
    if (!this.store) return { result: await work(), written: 0 };
    return runInScope(this.store.gate.dataSource, manager, work, closed);
  }

  /**
   * @internal Writes an event in the scope's transaction; resolves once the row is written (not
   * committed). An event with a key and no sequence gets the key's next sequence here.
   */
  write(scope: OutboxScope, envelope: SyncEvent, headers?: PublishOptions['headers']): Promise<SyncEvent> {
    const closed = scope.closed?.();
    if (closed) return Promise.reject(closed);
    const store = this.requireStore();
    const written = (async () => {
      if (envelope.key !== undefined && envelope.sequence === undefined) envelope.sequence = await store.nextSequence(scope.manager, envelope.key);
      const payload = envelopeJson(envelope);
      const bytes = Buffer.byteLength(payload);
      if (bytes > this.maxMessageBytes) throw new EventTooLargeError(envelope.eventType, bytes, this.maxMessageBytes);
      await store.add(scope.manager, envelope, payload, headers);
      this.metrics?.increment('outboxWritten');
      return envelope;
    })();
    scope.writes.push(written);
    return written;
  }

  private requireStore(): OutboxStore {
    if (!this.store) throw new OutboxUnavailableError();
    return this.store;
  }
}
