import { type DynamicModule, Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { SyncMetadataAccessor } from './discovery/sync-metadata.accessor.js';
import { SyncExplorer } from './discovery/sync.explorer.js';
import type { ResolvedSyncOptions, SyncModuleOptions } from './interfaces/sync-module-options.interface.js';
import { resolveSyncOptions } from './options/resolve-options.js';
import { SYNC_ENTITIES } from './persistence/index.js';
import { SyncOutbox } from './outbox/sync-outbox.js';
import { SyncPublisher } from './publisher/sync.publisher.js';
import { SyncLifecycle } from './sync.lifecycle.js';
import { SyncMetrics } from './sync.metrics.js';
import { ASYNC_OPTIONS_TYPE, ConfigurableModuleClass, OPTIONS_TYPE, SYNC_MODULE_OPTIONS, SYNC_RESOLVED_OPTIONS } from './sync.module-definition.js';
import { SyncClient } from './transport/sync.client.js';
import { SyncServer } from './transport/sync.server.js';

/**
 * Keeps data in sync between services through events on RabbitMQ. Global: import it once,
 * with `forRoot({ service, url })` or `forRootAsync({ useFactory, inject })`.
 */
@Module({
  imports: [DiscoveryModule],
  providers: [
    { provide: SYNC_RESOLVED_OPTIONS, useFactory: resolveSyncOptions, inject: [SYNC_MODULE_OPTIONS] },
    SyncMetrics,
    { provide: SyncClient, useFactory: (options: ResolvedSyncOptions, metrics: SyncMetrics) => new SyncClient(options, metrics), inject: [SYNC_RESOLVED_OPTIONS, SyncMetrics] },
    { provide: SyncServer, useFactory: (options: ResolvedSyncOptions) => new SyncServer(options), inject: [SYNC_RESOLVED_OPTIONS] },
    SyncOutbox,
    SyncPublisher,
    SyncMetadataAccessor,
    SyncExplorer,
    SyncLifecycle,
  ],
  exports: [SyncPublisher, SyncOutbox, SyncClient, SyncServer, SyncMetrics],
})
export class SyncModule extends ConfigurableModuleClass {
  /** Static options are checked here, so a wrong option fails where it is written. */
  static forRoot(options: typeof OPTIONS_TYPE): DynamicModule {
    resolveSyncOptions(withoutExtras(options));
    const definition = super.forRoot(options);
    return withEntities({ ...definition, global: true }, options.registerEntities ?? defaultRegistration(options.dataSource));
  }

  /** Async options are checked when the application initialises. */
  static forRootAsync(options: typeof ASYNC_OPTIONS_TYPE): DynamicModule {
    const definition = super.forRootAsync(options);
    return withEntities({ ...definition, global: true }, options.registerEntities ?? true);
  }
}

function withoutExtras(options: typeof OPTIONS_TYPE): SyncModuleOptions {
  const { registerEntities: _ignored, ...rest } = options;
  return rest;
}

function defaultRegistration(dataSource: SyncModuleOptions['dataSource']): boolean | string {
  if (dataSource instanceof DataSource) return false;
  return dataSource ?? true;
}

function withEntities(definition: DynamicModule, registration: boolean | string): DynamicModule {
  if (registration === false) return definition;
  const forFeature = TypeOrmModule.forFeature(SYNC_ENTITIES, registration === true ? undefined : registration);
  return { ...definition, imports: [...(definition.imports ?? []), forFeature] };
}
