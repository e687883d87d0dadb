/**
 * Scenarios (d)–(j), publishing: this library's `SyncPublisher.publish()`, which
 * resolves on the broker's confirm. Scenario (f) publishes through the outbox instead.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { SyncModule, SyncPublisher } from 'nestjs-event-sync';
import type { EntityManager } from 'typeorm';
import type { UserEvent } from './runtime/events.js';
import { EVENT_TYPE } from './runtime/protocol.js';
import type { PublishOne } from './runtime/publishing.js';
import { servePublisher } from './runtime/roles.js';
import { launch, workerConfig } from './runtime/worker.js';

const config = workerConfig();
const database = config.publisherDatabase ?? config.database;
if (database.type !== 'postgres') throw new Error('the publishing service of scenarios d-g uses PostgreSQL');

@Module({
  imports: [
    TypeOrmModule.forRoot({ type: 'postgres', url: database.url, schema: database.schema, autoLoadEntities: true, synchronize: false, poolSize: config.poolSize, logging: false }),
    SyncModule.forRoot({ service: `${config.service!}-publisher`, url: config.amqpUrl, exchange: config.exchange }),
  ],
})
class PublisherModule {}

/**
 * ---- Outbox hook (scenario f) ----
 * `SyncPublisher.transaction(work)` is the outbox API: `work(manager)` runs in a database
 * transaction, and what it publishes is stored in the outbox table in that same transaction
 * and relayed to RabbitMQ after the commit. Scenario f runs only when the built library has it.
 */
interface OutboxPublisher {
  transaction<T>(work: (manager: EntityManager) => Promise<T>): Promise<T>;
}

function hasOutbox(publisher: unknown): publisher is OutboxPublisher {
  return typeof (publisher as Partial<OutboxPublisher>).transaction === 'function';
}

async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(PublisherModule, { logger: config.logLevels });
  await app.init();
  const publisher = app.get(SyncPublisher);
  // d–f consume without ordering, so they publish without a key (a key adds the envelope field
  // and the sync-key-bucket header); h spreads events over its partitions by key.
  let publishOne: PublishOne = (event: UserEvent) => publisher.publish(EVENT_TYPE, event);
  // Scenario j: random ids, as a producer that sets its own would send (or this library before UUIDv7).
  if (config.scenario === 'j') publishOne = (event: UserEvent) => publisher.publish(EVENT_TYPE, event, { eventId: randomUUID() });
  if (config.scenario === 'h') publishOne = (event: UserEvent) => publisher.publish(EVENT_TYPE, event, { key: event.id });
  // Scenario g: the stale-event guard needs a sequence per key.
  if (config.scenario === 'g') publishOne = (event: UserEvent) => publisher.publish(EVENT_TYPE, event, { key: event.id, sequence: event.seq + 1 });
  if (config.scenario === 'f') {
    if (!hasOutbox(publisher)) throw new Error('SyncPublisher.prototype.transaction does not exist: the outbox is not available in this build');
    publishOne = (event: UserEvent) => publisher.transaction(async (_manager) => publisher.publish(EVENT_TYPE, event));
  }
  servePublisher(publishOne, () => app.close());
}

launch(main);
