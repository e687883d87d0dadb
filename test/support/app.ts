import { ConsoleLogger, type INestApplicationContext, type LoggerService, type Provider, type Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { deadLetterQueueName, partitionTopologyNames, retryQueueName, SyncMetrics, SyncModule, SyncServer, type SyncModuleOptions } from '../../lib/index.js';
import { Broker } from './broker.js';
import { type Engine, typeOrmOptions } from './databases.js';
import { AMQP_URL } from './env.js';
import { unique } from './wait.js';

export interface TestApp {
  app: INestApplicationContext;
  service: string;
  exchange: string;
  metrics: SyncMetrics;
  dataSource: DataSource;
  /** `<service>.<consumer>` */
  queueOf(consumer: string): string;
  /** Closes the app (graceful shutdown), then deletes its queues and exchange and database file. */
  close(): Promise<void>;
}

export interface StartOptions {
  engine: Engine;
  providers?: Provider[];
  controllers?: Type[];
  entities?: Function[];
  sync?: Partial<SyncModuleOptions>;
  /** Keep the queues after close (for tests that restart the same service). */
  keepTopology?: boolean;
  service?: string;
  exchange?: string;
  /** Reuse a SQLite file or other options across two apps. */
  typeorm?: ReturnType<typeof typeOrmOptions>;
  /** Where the app's logs go (default: errors to the console). */
  logger?: LoggerService;
}

/** Boots a Nest application context with TypeORM on a real database and SyncModule on the real broker. */
export async function startApp(options: StartOptions): Promise<TestApp> {
  const service = options.service ?? unique('svc');
  const exchange = options.exchange ?? unique('ex');
  const typeorm = options.typeorm ?? typeOrmOptions(options.engine, options.entities ?? []);
  const moduleRef = await Test.createTestingModule({
    imports: [TypeOrmModule.forRoot(typeorm.options), SyncModule.forRoot({ service, exchange, url: AMQP_URL, ...options.sync })],
    providers: options.providers ?? [],
    controllers: options.controllers ?? [],
  }).compile();
  moduleRef.useLogger(options.logger ?? (process.env.SYNC_TEST_LOGS ? new ConsoleLogger({ logLevels: ['log', 'warn', 'error', 'debug'] }) : ['error']));
  let app: INestApplicationContext;
  try {
    app = await moduleRef.init();
  } catch (error) {
    // A failed bootstrap must not leave connections behind that keep the test process alive.
    await moduleRef.close().catch(() => undefined);
    if (!options.typeorm) typeorm.cleanup();
    throw error;
  }
  const server = app.get(SyncServer);
  const queues = server.registered.flatMap((definition) =>
    definition.partitions
      ? partitionTopologyNames(definition.queue, definition.partitions).queues
      : [definition.queue, deadLetterQueueName(definition.queue), ...new Set(definition.retry.delaysMs.map((delay) => retryQueueName(definition.queue, delay)))],
  );
  const exchanges = server.registered.flatMap((definition) => (definition.partitions ? partitionTopologyNames(definition.queue, definition.partitions).exchanges : []));
  return {
    app,
    service,
    exchange,
    metrics: app.get(SyncMetrics),
    dataSource: app.get(DataSource),
    queueOf: (consumer) => `${service}.${consumer}`,
    async close() {
      await app.close();
      if (!options.keepTopology) {
        const broker = await Broker.connect();
        await broker.deleteQueues(...queues);
        await broker.deleteExchange(exchange);
        for (const name of exchanges) await broker.deleteExchange(name);
        await broker.close();
        if (!options.typeorm) typeorm.cleanup();
      }
    },
  };
}
