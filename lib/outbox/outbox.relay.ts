import { Logger } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { ResolvedOutboxOptions } from '../interfaces/sync-module-options.interface.js';
import type { SyncMetrics } from '../sync.metrics.js';
import type { SyncClient } from '../transport/sync.client.js';
import type { OutboxStore, PendingOutboxRow } from './outbox.store.js';

const QUIET_FAILURE_LOG_MS = 30_000;

export interface OutboxRelayStatus {
  running: boolean;
  /** Failed cycles in a row (0 when the last one went through). */
  consecutiveFailures: number;
  lastError?: string;
  lastPublishedAt?: Date;
}

/**
 * Publishes outbox rows: woken at once when a transaction with events commits, and on a timer
 * for rows it was not woken for (another instance's, a crashed process's, retries). Each cycle
 * claims a batch in id order, publishes it with confirms, and marks what was confirmed; a row
 * that failed waits with exponential backoff. Where the database has `SKIP LOCKED` the batch
 * stays locked until it is marked, so instances running side by side take different rows.
 */
export class OutboxRelay {
  private readonly logger = new Logger('SyncOutbox');
  private stopped = true;
  private woken = false;
  private wakeIdle?: () => void;
  private loop?: Promise<void>;
  private consecutiveFailures = 0;
  private lastError?: string;
  private lastPublishedAt?: Date;
  private lastFailureLog = 0;

  constructor(
    private readonly store: OutboxStore,
    private readonly client: SyncClient,
    private readonly options: ResolvedOutboxOptions,
    private readonly metrics: SyncMetrics,
  ) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  /** Runs a cycle now (or right after the one in flight): called when events were committed. */
  wake(): void {
    this.woken = true;
    this.wakeIdle?.();
  }

  /**
   * Finishes the cycle in flight (its publishes confirmed and marked) and stops. While the
   * broker is connected and `deadline` allows, it first publishes what is still due, so events
   * committed just before shutdown leave with this process; the rest wait for the next start.
   */
  async stop(deadline = Date.now()): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.wakeIdle?.();
    await this.loop;
    while (Date.now() < deadline && this.client.isConnected()) {
      const { claimed, failed } = await this.cycle().catch(() => ({ claimed: 0, failed: 1 }));
      if (failed > 0 || claimed < this.options.batchSize) break;
    }
  }

  status(): OutboxRelayStatus {
    return { running: !this.stopped, consecutiveFailures: this.consecutiveFailures, lastError: this.lastError, lastPublishedAt: this.lastPublishedAt };
  }

  /** One claim-publish-mark cycle; returns how many rows it claimed and whether any failed. */
  async cycle(): Promise<{ claimed: number; failed: number }> {
    if (this.store.dialect === 'sqlite') {
      // One connection, one relay: claim and mark in short steps so handlers are not held up while publishing.
      const rows = await this.store.gate.run(() => this.store.claim(this.store.gate.dataSource.manager, this.options.batchSize, Date.now()));
      if (rows.length === 0) return { claimed: 0, failed: 0 };
      const results = await this.publish(rows);
      await this.store.gate.transaction((manager) => this.mark(manager, rows, results));
      return { claimed: rows.length, failed: results.filter((r) => r.status === 'rejected').length };
    }
    // READ COMMITTED: InnoDB then locks only the claimed rows, not the gaps where new events are inserted.
    return this.store.gate.transaction(async (manager) => {
      const rows = await this.store.claim(manager, this.options.batchSize, Date.now());
      if (rows.length === 0) return { claimed: 0, failed: 0 };
      const results = await this.publish(rows);
      await this.mark(manager, rows, results);
      return { claimed: rows.length, failed: results.filter((r) => r.status === 'rejected').length };
    }, 'READ COMMITTED');
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      this.woken = false;
      let outcome = { claimed: 0, failed: 0 };
      try {
        outcome = await this.cycle();
        if (outcome.failed === 0) this.recordSuccess();
        else this.recordFailure(`${outcome.failed} of ${outcome.claimed} event(s) were not confirmed`);
      } catch (error) {
        this.recordFailure((error as Error).message);
        outcome.failed = 1;
      }
      if (this.stopped) break;
      if (outcome.failed === 0 && (outcome.claimed === this.options.batchSize || this.woken)) continue;
      await this.idle(outcome.failed > 0 ? this.backoff(this.consecutiveFailures) : this.options.pollIntervalMs);
    }
  }

  private publish(rows: PendingOutboxRow[]): Promise<PromiseSettledResult<void>[]> {
    return Promise.allSettled(rows.map((row) => this.client.publishStored(row)));
  }

  private async mark(manager: EntityManager, rows: PendingOutboxRow[], results: PromiseSettledResult<void>[]): Promise<void> {
    const published: string[] = [];
    for (const [index, result] of results.entries()) {
      const row = rows[index];
      if (result.status === 'fulfilled') {
        published.push(row.eventId);
        continue;
      }
      this.metrics.increment('outboxRelayFailed');
      const error = result.reason instanceof Error ? result.reason.message : String(result.reason);
      await this.store.markFailed(manager, row.eventId, error, Date.now() + this.backoff(row.attempts + 1));
    }
    await this.store.markPublished(manager, published);
    for (let i = 0; i < published.length; i++) this.metrics.increment('outboxRelayed');
    if (published.length > 0) this.lastPublishedAt = new Date();
  }

  private recordSuccess(): void {
    if (this.consecutiveFailures > 0) this.logger.log(`Outbox relay recovered after ${this.consecutiveFailures} failed cycle(s)`);
    this.consecutiveFailures = 0;
    this.lastError = undefined;
  }

  private recordFailure(message: string): void {
    this.consecutiveFailures += 1;
    this.lastError = message;
    if (Date.now() - this.lastFailureLog < QUIET_FAILURE_LOG_MS) return;
    this.lastFailureLog = Date.now();
    this.logger.warn(`Outbox relay cycle failed (${message}); the events stay in sync_outbox and are retried with backoff`);
  }

  /** 1st retry after `retryDelay`, doubling up to `maxRetryDelay`. */
  private backoff(failures: number): number {
    const { retryDelayMs, maxRetryDelayMs } = this.options;
    return Math.min(maxRetryDelayMs, retryDelayMs * 2 ** Math.max(0, Math.min(failures - 1, 30)));
  }

  private idle(ms: number): Promise<void> {
    if (this.woken || this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeIdle = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.wakeIdle = done;
    });
  }
}
