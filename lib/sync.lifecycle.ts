import { Inject, Injectable, Logger, type BeforeApplicationShutdown, type OnApplicationBootstrap, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { getDataSourceToken } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { EventProcessor } from './consumer/event-processor.js';
import { SyncExplorer } from './discovery/sync.explorer.js';
import { MissingDataSourceError } from './errors/missing-data-source.error.js';
import type { ResolvedSyncOptions } from './interfaces/sync-module-options.interface.js';
import { assertRetentionCovers } from './options/resolve-options.js';
import { InboxStore } from './persistence/inbox.store.js';
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
  private pruneTimer?: NodeJS.Timeout;

  constructor(
    @Inject(SYNC_RESOLVED_OPTIONS) private readonly options: ResolvedSyncOptions,
    private readonly explorer: SyncExplorer,
    private readonly server: SyncServer,
    private readonly client: SyncClient,
    private readonly publisher: SyncPublisher,
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
    this.inbox = new InboxStore(this.resolveDataSource());
    this.warnOnSqlite();
    this.server.usePipeline(new EventProcessor(this.inbox, this.metrics, this.options.exchange));
  }

  async onApplicationBootstrap(): Promise<void> {
    // Publishes wait for the broker on their own; with startupTimeout the app must not come up without one.
    if (this.options.startupTimeoutMs !== undefined) await this.client.waitUntilConnected(this.options.startupTimeoutMs);
    else await this.client.connect();
    await this.server.start();
    this.schedulePruning();
    this.logger.log(`Service "${this.options.service}" consumes ${this.server.registered.length} handler queue(s) on exchange "${this.options.exchange}"`);
  }

  async beforeApplicationShutdown(): Promise<void> {
    clearInterval(this.pruneTimer);
    await this.server.drain();
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

  private schedulePruning(): void {
    const retention = this.options.retentionMs;
    if (retention === false || !this.inbox) return;
    const inbox = this.inbox;
    this.pruneTimer = setInterval(() => {
      inbox
        .prune(retention)
        .then((deleted) => deleted > 0 && this.logger.log(`Pruned ${deleted} processed-event record(s) older than ${retention} ms`))
        .catch((error: Error) => this.logger.warn(`Pruning processed-event records failed: ${error.message}`));
    }, Math.min(DEFAULT_PRUNE_INTERVAL_MS, retention));
    this.pruneTimer.unref();
  }
}
