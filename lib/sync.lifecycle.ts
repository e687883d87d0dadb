import { Inject, Injectable, Logger, type BeforeApplicationShutdown, type OnApplicationBootstrap, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { getDataSourceToken } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import type { ConsumerDefinition } from './consumer/consumer-definition.js';
import { EventProcessor } from './consumer/event-processor.js';
import { SyncExplorer } from './discovery/sync.explorer.js';
import { InvalidDecoratorUsageError } from './errors/invalid-decorator-usage.error.js';
import { MissingDataSourceError } from './errors/missing-data-source.error.js';
import type { ResolvedSyncOptions } from './interfaces/sync-module-options.interface.js';
import { assertRetentionCovers } from './options/resolve-options.js';
import { OutboxRelay } from './outbox/outbox.relay.js';
import { OutboxStore } from './outbox/outbox.store.js';
import { SyncOutbox } from './outbox/sync-outbox.js';
import { OutboxTableMissingError } from './errors/outbox-table-missing.error.js';
import { InboxStore } from './persistence/inbox.store.js';
import { TransactionGate } from './persistence/transaction-gate.js';
import { SyncPublisher } from './publisher/sync.publisher.js';
import { SYNC_RESOLVED_OPTIONS } from './sync.module-definition.js';
import { SyncMetrics } from './sync.metrics.js';
import { DEFAULT_PRUNE_INTERVAL_MS } from './sync.constants.js';
import { SyncClient } from './transport/sync.client.js';
import { SyncServer } from './transport/sync.server.js';

/**
 * Discovers handlers and wires the pipeline on init, starts consuming on bootstrap, stops and
 * drains in-flight work before shutdown, and closes connections last.
 */
@Injectable()
export class SyncLifecycle implements OnModuleInit, OnApplicationBootstrap, BeforeApplicationShutdown, OnApplicationShutdown {
  private readonly logger = new Logger('SyncModule');
  private inbox?: InboxStore;
  private outboxStore?: OutboxStore;
  private relay?: OutboxRelay;
  private pruneTimer?: NodeJS.Timeout;

  constructor(
    @Inject(SYNC_RESOLVED_OPTIONS) private readonly options: ResolvedSyncOptions,
    private readonly explorer: SyncExplorer,
    private readonly server: SyncServer,
    private readonly client: SyncClient,
    private readonly publisher: SyncPublisher,
    private readonly outbox: SyncOutbox,
    private readonly metrics: SyncMetrics,
    private readonly moduleRef: ModuleRef,
  ) {}

  onModuleInit(): void {
    this.explorer.bindPublishers();
    const handlers = this.explorer.handlers(this.options);
    for (const handler of handlers) {
      assertRetentionCovers(this.options.retentionMs, handler.retry.delaysMs, handler.label);
      this.server.register(handler);
    }
    const gate = new TransactionGate(this.resolveDataSource());
    this.inbox = new InboxStore(gate);
    assertPipelineFor(handlers, gate.dataSource);
    if (this.options.outbox.enabled) {
      this.outboxStore = new OutboxStore(gate, this.options.service);
      if (this.options.outbox.relay) this.relay = new OutboxRelay(this.outboxStore, this.client, this.options.outbox, this.metrics);
      this.outbox.attach(this.outboxStore, this.relay, this.metrics, this.options.maxMessageBytes);
    }
    this.warnOnSqlite();
    this.server.usePipeline(new EventProcessor(this.inbox, this.outbox, this.metrics, this.options));
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.assertOutboxTable();
    // Publishes wait for the broker on their own; with startupTimeout the app must not come up without one.
    if (this.options.startupTimeoutMs !== undefined) await this.client.waitUntilConnected(this.options.startupTimeoutMs);
    else await this.client.connect();
    await this.server.start();
    // Rows a previous run committed but did not publish go out now.
    this.relay?.start();
    this.schedulePruning();
    this.logger.log(`Service "${this.options.service}" consumes ${this.server.registered.length} handler queue(s) on exchange "${this.options.exchange}"`);
  }

  async beforeApplicationShutdown(): Promise<void> {
    clearInterval(this.pruneTimer);
    await this.server.drain();
    // After the handlers: what they committed to the outbox leaves with this process if the broker is there.
    await this.relay?.stop(Date.now() + this.options.shutdownTimeoutMs);
    await this.publisher.flush();
  }

  async onApplicationShutdown(): Promise<void> {
    await this.server.close();
    await this.client.close();
  }

  /** SQLite has one connection: whatever else the app writes while a handler runs joins (and shares the fate of) its transaction. */
  private warnOnSqlite(): void {
    if (this.inbox?.dialect !== 'sqlite') return;
    this.logger.warn(
      'Processed events are stored on SQLite, which has a single connection: handlers run one at a time, and any other ' +
        'query the application runs while a handler is in flight joins that handler\'s transaction. Use SQLite for ' +
        'single-writer services, tests and demos; use PostgreSQL or MySQL/MariaDB for services that write concurrently.',
    );
  }

  private resolveDataSource(): DataSource {
    const { dataSource } = this.options;
    if (dataSource instanceof DataSource) return dataSource;
    try {
      const found = this.moduleRef.get<DataSource>(getDataSourceToken(dataSource) as string, { strict: false });
      if (found instanceof DataSource) return found;
    } catch {
      // Reported below with the fix.
    }
    throw new MissingDataSourceError(dataSource);
  }

  /** Fails startup with the fix when the outbox is on but its table was never created. */
  private async assertOutboxTable(): Promise<void> {
    await this.outboxStore?.assertTablesExist((table, migration, error) => new OutboxTableMissingError(table, migration, error));
  }

  private schedulePruning(): void {
    const { retentionMs } = this.options;
    const outboxRetentionMs = this.outboxStore ? this.options.outbox.retentionMs : false;
    const windows = [retentionMs, outboxRetentionMs].filter((ms): ms is number => ms !== false);
    if (windows.length === 0) return;
    this.pruneTimer = setInterval(() => void this.prune(retentionMs, outboxRetentionMs), Math.min(DEFAULT_PRUNE_INTERVAL_MS, ...windows));
    this.pruneTimer.unref();
  }

  /** Deletes processed-event ids and published outbox rows past their retention windows. */
  async prune(retentionMs = this.options.retentionMs, outboxRetentionMs = this.options.outbox.retentionMs): Promise<void> {
    if (retentionMs !== false && this.inbox) {
      await this.inbox
        .prune(retentionMs)
        .then((deleted) => deleted > 0 && this.logger.log(`Pruned ${deleted} processed-event record(s) older than ${retentionMs} ms`))
        .catch((error: Error) => this.logger.warn(`Pruning processed-event records failed: ${error.message}`));
    }
    if (outboxRetentionMs !== false && this.outboxStore) {
      await this.outboxStore
        .prune(outboxRetentionMs)
        .then((deleted) => deleted > 0 && this.logger.log(`Pruned ${deleted} published outbox row(s) older than ${outboxRetentionMs} ms`))
        .catch((error: Error) => this.logger.warn(`Pruning published outbox rows failed: ${error.message}`));
    }
  }
}

/**
 * `parallel` handlers share one PostgreSQL connection at once: without pg's pipeline mode their
 * statements would queue one behind the other (and pg deprecates queueing on a busy client).
 */
function assertPipelineFor(handlers: ConsumerDefinition[], dataSource: DataSource): void {
  if (dataSource.options.type !== 'postgres') return;
  const parallel = handlers.filter((handler) => handler.parallel).map((handler) => handler.label);
  if (parallel.length === 0 || (dataSource.options.extra as { pipeline?: unknown } | undefined)?.pipeline === true) return;
  throw new InvalidDecoratorUsageError(
    `@OnEvent option parallel (${parallel.join(', ')}) runs the handlers of a batch at once on one PostgreSQL connection, which needs ` +
      "pg's pipeline mode: add `extra: { pipeline: true }` to the DataSource options, or drop `parallel`.",
  );
}
