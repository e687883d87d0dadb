import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConfigurableModuleOptionsFactory, type DynamicModule, Injectable, Module, type Provider, Scope, type Type } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { DataSource, type DataSourceOptions } from 'typeorm';
import {
  deadLetterQueueName,
  DuplicateConsumerError,
  EventContext,
  InvalidSyncOptionsError,
  OnEvent,
  retryQueueName,
  SYNC_ENTITIES,
  SYNC_MIGRATIONS,
  SyncModule,
  type SyncModuleOptions,
  SyncProcessedEvent,
  SyncOutboxMessage,
  SyncPublisher,
  SyncServer,
  UnsupportedHandlerScopeError,
} from '../../lib/index.js';
import { Broker } from '../support/broker.js';
import { ENGINES, type Engine, typeOrmOptions } from '../support/databases.js';
import { AMQP_URL, MARIADB_URL, POSTGRES_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';

const LOGGER = process.env.SYNC_TEST_LOGS ? (['log', 'warn', 'error', 'debug'] as const) : false;

/** Compiles and initialises an application context on a fresh SQLite file, as a user's AppModule would. */
async function boot(sync: DynamicModule, providers: Provider[] = [], typeorm: TypeOrmModuleOptions = typeOrmOptions('sqlite', []).options): Promise<TestingModule> {
  const moduleRef = await Test.createTestingModule({ imports: [TypeOrmModule.forRoot(typeorm), sync], providers }).compile();
  moduleRef.useLogger(LOGGER ? [...LOGGER] : false);
  try {
    await moduleRef.init();
  } catch (error) {
    await moduleRef.close().catch(() => undefined);
    throw error;
  }
  return moduleRef;
}

/** Closes the app, then deletes the queues and exchange it declared. */
async function shutdown(moduleRef: TestingModule, exchange: string): Promise<void> {
  const queues = moduleRef.get(SyncServer).registered.flatMap((definition) => [
    definition.queue,
    deadLetterQueueName(definition.queue),
    ...new Set(definition.retry.delaysMs.map((delay) => retryQueueName(definition.queue, delay))),
  ]);
  await moduleRef.close();
  const broker = await Broker.connect();
  await broker.deleteQueues(...queues);
  await broker.deleteExchange(exchange);
  await broker.close();
}

/**
 * For boots expected to fail: nothing on disk to clean up, and no connection retries left
 * running when bootstrap gives up before TypeORM has finished connecting.
 */
const IN_MEMORY: TypeOrmModuleOptions = { type: 'better-sqlite3', database: ':memory:', autoLoadEntities: true, synchronize: true, retryAttempts: 0 };

function errorOf(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  throw new Error('expected a synchronous throw');
}

/** A handler class with its own consumer name, recording what it gets. */
function pingHandler(consumer: string, runs: EventContext[]): Type {
  @Injectable()
  class PingHandler {
    @OnEvent('Ping', { consumer, retry: false })
    async onPing(_data: unknown, ctx: EventContext) {
      runs.push(ctx);
    }
  }
  return PingHandler;
}

/** Boots with the given SyncModule import and proves an event goes all the way through its handler. */
async function expectServesEvents(sync: (options: SyncModuleOptions) => DynamicModule): Promise<void> {
  const service = unique('svc');
  const exchange = unique('ex');
  const consumer = unique('Ping.onPing');
  const runs: EventContext[] = [];
  const sqlite = typeOrmOptions('sqlite', []);
  const moduleRef = await boot(sync({ service, exchange, url: AMQP_URL, retry: false }), [pingHandler(consumer, runs)], sqlite.options);
  try {
    const envelope = await moduleRef.get(SyncPublisher).publish('Ping', { n: 1 });
    const ctx = await waitFor(() => runs.find((run) => run.eventId === envelope.eventId), { what: 'the Ping handler' });
    expect(ctx).toMatchObject({ source: service, consumer, eventType: 'Ping' });
    // The run has started; its dedupe row commits with it.
    await waitFor(async () => (await moduleRef.get(DataSource).getRepository(SyncProcessedEvent).countBy({ consumer, eventId: envelope.eventId })) === 1, {
      what: 'the dedupe row',
    });
    expect(moduleRef.get(SyncServer).registered.map((definition) => definition.queue)).toEqual([`${service}.${consumer}`]);
  } finally {
    await shutdown(moduleRef, exchange);
    sqlite.cleanup();
  }
}

describe('SyncModule.forRoot option checks', () => {
  it('throws at once, naming `url`, when there is no broker URL', () => {
    const error = errorOf(() => SyncModule.forRoot({ service: 'x' }));
    expect(error).toBeInstanceOf(InvalidSyncOptionsError);
    expect(error).toMatchObject({ name: 'InvalidSyncOptionsError', option: 'url' });
    expect((error as Error).message).toMatch(/amqp:\/\//);
  });

  it('throws at once, naming `service`, when the service has no name', () => {
    const error = errorOf(() => SyncModule.forRoot({ url: AMQP_URL } as SyncModuleOptions));
    expect(error).toBeInstanceOf(InvalidSyncOptionsError);
    expect(error).toMatchObject({ option: 'service' });
  });
});

describe('SyncModule.forRootAsync', () => {
  it('takes options from useFactory with inject and imports', async () => {
    const calls: unknown[] = [];

    @Injectable()
    class AppConfig {
      readonly url = AMQP_URL;
    }

    @Module({ providers: [AppConfig], exports: [AppConfig] })
    class AppConfigModule {}

    await expectServesEvents((options) =>
      SyncModule.forRootAsync({
        imports: [AppConfigModule],
        inject: [AppConfig],
        useFactory: (config: AppConfig) => {
          calls.push(config);
          return { ...options, url: config.url };
        },
      }),
    );
    expect(calls).toHaveLength(1);
    expect(calls[0]).toBeInstanceOf(AppConfig);
  });

  it('takes options from a useClass factory class (its create() method)', async () => {
    let created = 0;
    await expectServesEvents((options) => {
      @Injectable()
      class SyncOptionsFactory implements ConfigurableModuleOptionsFactory<SyncModuleOptions, 'create'> {
        create(): SyncModuleOptions {
          created += 1;
          return options;
        }
      }
      return SyncModule.forRootAsync({ useClass: SyncOptionsFactory });
    });
    expect(created).toBe(1);
  });

  it('takes options from a useExisting provider exported by an imported module', async () => {
    const instances: unknown[] = [];
    let exported: Type | undefined;
    await expectServesEvents((options) => {
      @Injectable()
      class SharedSyncOptions implements ConfigurableModuleOptionsFactory<SyncModuleOptions, 'create'> {
        async create(): Promise<SyncModuleOptions> {
          instances.push(this);
          return options;
        }
      }

      @Module({ providers: [SharedSyncOptions], exports: [SharedSyncOptions] })
      class SharedOptionsModule {}

      exported = SharedSyncOptions;
      return SyncModule.forRootAsync({ imports: [SharedOptionsModule], useExisting: SharedSyncOptions });
    });
    expect(instances).toHaveLength(1);
    expect(instances[0]).toBeInstanceOf(exported!);
  });

  it('rejects at bootstrap with InvalidSyncOptionsError naming a bad async option', async () => {
    const failure = await boot(
      SyncModule.forRootAsync({ useFactory: () => ({ service: unique('svc'), exchange: unique('ex'), url: AMQP_URL, prefetch: 0 }) }),
      [],
      IN_MEMORY,
    ).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(InvalidSyncOptionsError);
    expect(failure).toMatchObject({ option: 'prefetch' });
  });
});

describe('handler discovery errors', () => {
  const failureOf = (providers: Provider[]) =>
    boot(SyncModule.forRoot({ service: unique('svc'), exchange: unique('ex'), url: AMQP_URL }), providers, IN_MEMORY).then(
      async (moduleRef) => {
        await moduleRef.close();
        return undefined;
      },
      (error: unknown) => error,
    );

  it('rejects two handlers with the same consumer name with DuplicateConsumerError', async () => {
    const consumer = unique('shared');

    @Injectable()
    class First {
      @OnEvent('Ping', { consumer })
      async onPing() {}
    }

    @Injectable()
    class Second {
      @OnEvent('Pong', { consumer })
      async onPong() {}
    }

    const failure = await failureOf([First, Second]);
    expect(failure).toBeInstanceOf(DuplicateConsumerError);
    expect(failure).toMatchObject({ consumer });
    expect((failure as Error).message).toContain('First.onPing');
    expect((failure as Error).message).toContain('Second.onPong');
  });

  it('rejects an @OnEvent method on a request-scoped class with UnsupportedHandlerScopeError', async () => {
    @Injectable({ scope: Scope.REQUEST })
    class PerRequest {
      @OnEvent('Ping', { consumer: unique('per-request') })
      async onPing() {}
    }

    const failure = await failureOf([PerRequest]);
    expect(failure).toBeInstanceOf(UnsupportedHandlerScopeError);
    expect(failure).toMatchObject({ handler: 'PerRequest.onPing' });
  });
});

describe('the dedupe table', () => {
  it('appears on its own with autoLoadEntities and synchronize, no entities listed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sync-autoload-'));
    const database = join(dir, 'db.sqlite');
    const exchange = unique('ex');
    try {
      expect(existsSync(database)).toBe(false);
      const moduleRef = await boot(SyncModule.forRoot({ service: unique('svc'), exchange, url: AMQP_URL }), [], {
        type: 'better-sqlite3',
        database,
        autoLoadEntities: true,
        synchronize: true,
      });
      try {
        const dataSource = moduleRef.get(DataSource);
        expect(await dataSource.query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'sync_processed_events'`)).toEqual([
          { name: 'sync_processed_events' },
        ]);
        const columns: Array<{ name: string; pk: number }> = await dataSource.query(`PRAGMA table_info('sync_processed_events')`);
        expect(columns.filter((column) => column.pk > 0).map((column) => column.name).sort()).toEqual(['consumer', 'event_id']);
      } finally {
        await shutdown(moduleRef, exchange);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A database nobody has touched: a new SQLite file, or a new PostgreSQL / MariaDB database dropped afterwards. */
async function freshDatabase(engine: Engine): Promise<{ options: DataSourceOptions; drop(): Promise<void> }> {
  if (engine === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'sync-migrations-'));
    return { options: { type: 'better-sqlite3', database: join(dir, 'db.sqlite') }, drop: async () => rmSync(dir, { recursive: true, force: true }) };
  }
  const name = unique('sync_mig').replace(/-/g, '_');
  const adminOptions: DataSourceOptions = engine === 'postgres' ? { type: 'postgres', url: POSTGRES_URL } : { type: 'mariadb', url: MARIADB_URL };
  const admin = await new DataSource(adminOptions).initialize();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.destroy();
  const url = new URL(adminOptions.url!);
  url.pathname = `/${name}`;
  return {
    options: { ...adminOptions, url: url.toString() } as DataSourceOptions,
    async drop() {
      const cleaner = await new DataSource(adminOptions).initialize();
      await cleaner.query(`DROP DATABASE IF EXISTS ${name}`);
      await cleaner.destroy();
    },
  };
}

describe.each(ENGINES)('SYNC_MIGRATIONS on %s', (engine) => {
  it('creates the dedupe, outbox and key-offset tables, matching the entities, and reverts them', async () => {
    const database = await freshDatabase(engine);
    const dataSource = new DataSource({ ...database.options, entities: SYNC_ENTITIES, migrations: SYNC_MIGRATIONS, synchronize: false, logging: false } as DataSourceOptions);
    try {
      await dataSource.initialize();
      const runner = dataSource.createQueryRunner();
      try {
        expect(await runner.hasTable('sync_processed_events')).toBe(false);

        const ran = await dataSource.runMigrations();
        expect(ran.map((migration) => migration.name)).toEqual(['CreateSyncProcessedEvents1764115200000', 'CreateSyncOutbox1764201600000', 'CreateSyncKeyOffsets1764288000000']);
        expect((await runner.getTable('sync_key_offsets'))?.primaryColumns.map((column) => column.name).sort()).toEqual(['consumer', 'event_key']);
        const table = await runner.getTable('sync_processed_events');
        expect(table?.primaryColumns.map((column) => column.name).sort()).toEqual(['consumer', 'event_id']);
        const outboxTable = await runner.getTable('sync_outbox');
        expect(outboxTable?.primaryColumns.map((column) => column.name)).toEqual(['event_id']);
        const outbox = dataSource.getRepository(SyncOutboxMessage);
        const row = { eventId: 'e-1', position: Date.now() * 1000, eventType: 'UserCreated', source: 'users', routingKey: 'UserCreated', key: null, payload: '{}', headers: null };
        await outbox.insert(row);
        await expect(outbox.insert(row)).rejects.toThrow();
        expect(await outbox.findOneByOrFail({ eventId: 'e-1' })).toMatchObject({ attempts: 0, publishedAt: null, nextAttemptAt: null, position: row.position });

        const processed = dataSource.getRepository(SyncProcessedEvent);
        await processed.insert({ consumer: 'Projection.onUserCreated', eventId: 'e-1' });
        await processed.insert({ consumer: 'Audit.onUserCreated', eventId: 'e-1' });
        await expect(processed.insert({ consumer: 'Projection.onUserCreated', eventId: 'e-1' })).rejects.toThrow();
        expect(await processed.count()).toBe(2);

        const drift = await dataSource.driver.createSchemaBuilder().log();
        expect(drift.upQueries.map((query) => query.query)).toEqual([]);

        await dataSource.undoLastMigration();
        expect(await runner.hasTable('sync_key_offsets')).toBe(false);
        await dataSource.undoLastMigration();
        expect(await runner.hasTable('sync_outbox')).toBe(false);
        await dataSource.undoLastMigration();
        expect(await runner.hasTable('sync_processed_events')).toBe(false);
        expect(await dataSource.showMigrations()).toBe(true);
      } finally {
        await runner.release();
      }
    } finally {
      if (dataSource.isInitialized) await dataSource.destroy();
      await database.drop();
    }
  });
});
