/**
 * A publishing service in a process of its own, for tests that kill it.
 * Env: SERVICE, EXCHANGE, DATABASE_URL (PostgreSQL), COUNT (events to commit, 0 = none),
 * RELAY ('off' holds every committed event in the outbox). Prints `READY`, then `COMMITTED <n>`
 * once all n transactions have committed, and stays up until SIGTERM (graceful close, exit 0) or SIGKILL.
 */
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { PublishesEvent, SyncModule, SyncPublisher } from '../../../lib/index.js';
import { AMQP_URL } from '../env.js';
import { closeOnSigterm } from './close-on-sigterm.js';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

@Injectable()
class UsersService {
  @PublishesEvent('UserCreated', { key: (user: { id: string }) => user.id })
  async create(id: string): Promise<{ id: string }> {
    return { id };
  }
}

@Module({
  imports: [
    TypeOrmModule.forRoot({ type: 'postgres', url: env('DATABASE_URL'), autoLoadEntities: true, synchronize: true, logging: false }),
    SyncModule.forRoot({ service: env('SERVICE'), exchange: env('EXCHANGE'), url: AMQP_URL, outbox: { relay: process.env.RELAY !== 'off', pollInterval: '200ms' } }),
  ],
  providers: [UsersService],
})
class PublisherModule {}

const app = await NestFactory.createApplicationContext(PublisherModule, { logger: ['error', 'warn'] });
closeOnSigterm(app);
console.log('READY');
const count = Number(process.env.COUNT ?? 0);
if (count > 0) {
  const users = app.get(UsersService);
  const publisher = app.get(SyncPublisher);
  const prefix = env('ID_PREFIX');
  for (let i = 0; i < count; i++) await publisher.transaction(() => users.create(`${prefix}-${i}`));
  console.log(`COMMITTED ${count}`);
}
