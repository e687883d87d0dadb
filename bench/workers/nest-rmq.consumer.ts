/**
 * Scenario (b), consuming: Nest's own RMQ transport (ServerRMQ) with `noAck: false`, an
 * `@EventPattern` handler that upserts through a TypeORM repository and acks by hand. A failed
 * event is nacked without requeue and dead-lettered to a TTL queue that sends it back. No dedupe.
 */
import 'reflect-metadata';
import { createRequire } from 'node:module';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Ctx, EventPattern, type MicroserviceOptions, Payload, RmqContext, Transport } from '@nestjs/microservices';
import { InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import type { Channel, ConsumeMessage } from 'amqplib';
import { EntitySchema, type Repository } from 'typeorm';
import { type UserEvent, type UserRow, userRow, usersEntityOptions } from './runtime/events.js';
import { EVENT_TYPE } from './runtime/protocol.js';
import { consumerTracker, serveConsumer } from './runtime/roles.js';
import { PlannedFailure } from './runtime/tracker.js';
import { launch, workerConfig } from './runtime/worker.js';

const config = workerConfig();
const tracker = consumerTracker(config, createRequire(import.meta.url));
if (config.database.type !== 'postgres') throw new Error('scenario b writes to PostgreSQL');
const database = config.database;
const Users = new EntitySchema<UserRow>(usersEntityOptions(config.usersTable, 'postgres'));

@Controller()
class UsersController {
  constructor(@InjectRepository(Users) private readonly users: Repository<UserRow>) {}

  @EventPattern<string>(EVENT_TYPE)
  async onUserUpserted(@Payload() user: UserEvent, @Ctx() context: RmqContext): Promise<void> {
    const channel = context.getChannelRef() as Channel;
    const message = context.getMessage() as ConsumeMessage;
    try {
      const fail = tracker.start(message, user);
      await this.users.upsert(userRow(user), ['id']);
      if (fail) throw new PlannedFailure(user.seq);
      tracker.succeed(message);
      channel.ack(message);
    } catch {
      channel.nack(message, false, false);
    }
  }
}

@Module({
  imports: [
    TypeOrmModule.forRoot({ type: 'postgres', url: database.url, schema: database.schema, entities: [Users], synchronize: false, poolSize: config.poolSize, logging: false }),
    TypeOrmModule.forFeature([Users]),
  ],
  controllers: [UsersController],
})
class ConsumerModule {}

async function main(): Promise<void> {
  const app = await NestFactory.createMicroservice<MicroserviceOptions>(ConsumerModule, {
    logger: config.logLevels,
    transport: Transport.RMQ,
    options: {
      urls: [config.amqpUrl],
      queue: config.queue,
      queueOptions: { durable: true, arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': config.retryQueue } },
      noAck: false,
      prefetchCount: config.prefetch,
      exchange: config.exchange,
      exchangeType: 'topic',
      routingKey: EVENT_TYPE,
    },
  });
  await app.listen();
  serveConsumer(config, tracker, () => app.close());
}

launch(main);
