import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { SyncModuleOptions } from './interfaces/sync-module-options.interface.js';

export interface SyncModuleExtras {
  /**
   * Registers the library's entities with @nestjs/typeorm so `autoLoadEntities` picks them up:
   * `true` for the default DataSource, a name for a named one, `false` when the app does not
   * use TypeOrmModule (add `SYNC_ENTITIES` / `SYNC_MIGRATIONS` to your DataSource yourself).
   * Default: follows the `dataSource` option (`true` when it is not given).
   */
  registerEntities?: boolean | string;
}

export const { ConfigurableModuleClass, MODULE_OPTIONS_TOKEN: SYNC_MODULE_OPTIONS, OPTIONS_TYPE, ASYNC_OPTIONS_TYPE } =
  new ConfigurableModuleBuilder<SyncModuleOptions>({ moduleName: 'Sync' })
    .setClassMethodName('forRoot')
    .setExtras<SyncModuleExtras>({ registerEntities: undefined }, (definition) => definition)
    .build();

/** The validated options with defaults (see resolveSyncOptions). */
export const SYNC_RESOLVED_OPTIONS = Symbol('SYNC_RESOLVED_OPTIONS');
