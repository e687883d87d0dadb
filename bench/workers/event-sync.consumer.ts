/**
 * Scenarios (d), (e), (f) and (g), consuming: this library. An `@OnEvent` handler upserts the user
 * through `ctx.manager`, the transaction that also inserts the dedupe row; the library acks
 * after the commit and sends a failed event to its retry tier. PostgreSQL for d, f and g (g with ordering: 'key'), SQLite for e.
 * Scenario (i) runs scenario (a)'s upsert statement through `ctx.manager.query` instead of TypeORM's
 * upsert builder, so its handler does exactly the work (a)'s does.
 */
import 'reflect-metadata';
import { createRequire } from 'node:module';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { type EventContext, OnEvent, type OnEventOptions, SyncModule, SyncServer } from 'nestjs-event-sync';
import { EntitySchema } from 'typeorm';
import { type UserEvent, type UserRow, upsertParams, upsertSql, userRow, usersEntityOptions } from './runtime/events.js';
import { BENCH_PARTITIONS, type DatabaseConfig, EVENT_TYPE } from './runtime/protocol.js';
import { consumerTracker, serveConsumer } from './runtime/roles.js';
import { PlannedFailure } from './runtime/tracker.js';
import { launch, workerConfig } from './runtime/worker.js';

const config = workerConfig();
const tracker = consumerTracker(config, createRequire(import.meta.url));
/** Scenario (i): (a)'s statement, in the dedupe transaction. */
const rawUpsert = config.scenario === 'i' && config.database.type === 'postgres' ? upsertSql(config.database.schema, config.usersTable) : undefined;
const Users = new EntitySchema<UserRow>(usersEntityOptions(config.usersTable, config.database.type));

/** d–f and i: the plain path; g: the stale-event guard; h: partitions (one event at a time each, so no concurrency). */
function handlerOptions(): OnEventOptions {
  if (config.scenario === 'h') return { partitions: BENCH_PARTITIONS };
  return { concurrency: config.concurrency, ...(config.parallel ? { parallel: true } : {}), ...(config.scenario === 'g' ? { ordering: 'key' as const } : {}) };
}

@Injectable()
class UsersProjection {
  @OnEvent(EVENT_TYPE, { consumer: config.consumerName, ...handlerOptions() })
  async onUserUpserted(user: UserEvent, ctx: EventContext): Promise<void> {
    const fail = tracker.start(ctx.message, user);
    if (rawUpsert) await ctx.manager.query(rawUpsert, upsertParams(userRow(user)));
    else await ctx.manager.upsert(Users, userRow(user), ['id']);
    if (fail) throw new PlannedFailure(user.seq);
    tracker.succeed(ctx.message);
  }
}

@Module({
  imports: [
    TypeOrmModule.forRoot(typeOrmOptions(config.database, [Users], config.poolSize)),
    SyncModule.forRoot({
      service: config.service!,
      url: config.amqpUrl,
      exchange: config.exchange,
      prefetch: config.prefetch,
      retry: { attempts: 3, delays: [config.retryDelayMs] },
      ...(config.batchSize === undefined ? {} : { batchSize: config.batchSize }),
      ...(config.queueMode === undefined ? {} : { queueMode: config.queueMode }),
    }),
  ],
  providers: [UsersProjection],
})
class ConsumerModule {}

function typeOrmOptions(database: DatabaseConfig, entities: Function[] | EntitySchema[], poolSize: number): TypeOrmModuleOptions {
  const common = { entities, autoLoadEntities: true, synchronize: false, logging: false } as const;
  return database.type === 'postgres'
    ? { type: 'postgres', url: database.url, schema: database.schema, poolSize, ...(config.parallel ? { extra: { pipeline: true } } : {}), ...common }
    : { type: 'better-sqlite3', database: database.path, ...common };
}

async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(ConsumerModule, { logger: config.logLevels });
  await app.init();
  // The settings the library resolved for the handler (defaults included), for the report.
  const [handler] = app.get(SyncServer).registered as unknown as Array<Record<string, unknown>>;
  const settings = Object.fromEntries(['concurrency', 'batchSize', 'parallel', 'ordering', 'partitions'].filter((key) => handler?.[key] !== undefined).map((key) => [key, String(handler[key])]));
  serveConsumer(config, tracker, () => app.close(), { prefetch: String(config.prefetch), ...settings });
}

launch(main);
