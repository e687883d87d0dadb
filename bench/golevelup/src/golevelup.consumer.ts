/**
 * Scenario (c), consuming: @golevelup/nestjs-rabbitmq 9 (Nest 11). A `@RabbitSubscribe` handler
 * upserts through a TypeORM repository; the library acks when the handler returns. A failed event
 * is nacked without requeue (`errorBehavior: NACK`) and dead-lettered, through the queue's
 * arguments, to a TTL queue that sends it back. No dedupe.
 */
import 'reflect-metadata';
import { MessageHandlerErrorBehavior, RabbitMQModule, RabbitSubscribe } from '@golevelup/nestjs-rabbitmq';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { EntitySchema, type Repository } from 'typeorm';
import { type UserEvent, type UserRow, userRow, usersEntityOptions } from '../../workers/runtime/events.js';
import { EVENT_TYPE } from '../../workers/runtime/protocol.js';
import { consumerTracker, serveConsumer } from '../../workers/runtime/roles.js';
import { PlannedFailure, type TrackedMessage } from '../../workers/runtime/tracker.js';
import { launch, workerConfig } from '../../workers/runtime/worker.js';

const config = workerConfig();
const tracker = consumerTracker(config, require);
if (config.database.type !== 'postgres') throw new Error('scenario c writes to PostgreSQL');
const database = config.database;
const Users = new EntitySchema<UserRow>(usersEntityOptions(config.usersTable, 'postgres'));

@Injectable()
class UsersProjection {
  constructor(@InjectRepository(Users) private readonly users: Repository<UserRow>) {}

  @RabbitSubscribe({
    exchange: config.exchange,
    routingKey: EVENT_TYPE,
    queue: config.queue,
    queueOptions: { durable: true, arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': config.retryQueue } },
    errorBehavior: MessageHandlerErrorBehavior.NACK,
  })
  async onUserUpserted(user: UserEvent, message: TrackedMessage): Promise<void> {
    const fail = tracker.start(message, user);
    await this.users.upsert(userRow(user), ['id']);
    if (fail) throw new PlannedFailure(user.seq);
    tracker.succeed(message);
  }
}

@Module({
  imports: [
    TypeOrmModule.forRoot({ type: 'postgres', url: database.url, schema: database.schema, entities: [Users], synchronize: false, poolSize: config.poolSize, logging: false }),
    TypeOrmModule.forFeature([Users]),
    RabbitMQModule.forRoot({
      uri: config.amqpUrl,
      prefetchCount: config.prefetch,
      exchanges: [{ name: config.exchange, type: 'topic', options: { durable: true } }],
      connectionInitOptions: { wait: true },
    }),
  ],
  providers: [UsersProjection],
})
class ConsumerModule {}

async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(ConsumerModule, { logger: config.logLevels });
  await app.init();
  serveConsumer(config, tracker, () => app.close());
}

launch(main);
