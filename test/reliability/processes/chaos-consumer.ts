/**
 * The billing service of the chaos run, in a process of its own so it can be SIGKILLed; several
 * run at once with one service name and compete on its queues. Each handler writes through
 * `ctx.manager`: one row per application in the effects table (no unique key on the event id,
 * so an event applied twice shows as two rows) and an upsert of the customer copy. Events the
 * publisher marked `poison` are refused with NonRetryableError: the run's deliberate dead letters.
 *
 * Env: RUN_ID, DATABASE_URL (PostgreSQL), INSTANCE (a label stored with each effect), CHAOS_HANDLER_MS.
 * Prints `READY` once consuming, and stays up until SIGTERM (graceful close, exit 0) or SIGKILL.
 */
import { setTimeout as work } from 'node:timers/promises';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { type EventContext, NonRetryableError, OnEvent, SyncModule } from '../../../lib/index.js';
import { AMQP_URL } from '../../support/env.js';
import { CHAOS_RETRY, chaosConfig, chaosNames, type UserEventData } from '../chaos-plan.js';
import { closeOnSigterm } from '../../support/processes/close-on-sigterm.js';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const names = chaosNames(env('RUN_ID'));
const { handlerMs } = chaosConfig();
const instance = env('INSTANCE');
const { effects, customers } = names.tables;

@Injectable()
class ChaosBilling {
  @OnEvent('UserCreated', { consumer: names.consumers.UserCreated, retry: CHAOS_RETRY })
  async onUserCreated(data: UserEventData, ctx: EventContext): Promise<void> {
    await this.apply(data, ctx);
  }

  @OnEvent('UserUpdated', { consumer: names.consumers.UserUpdated, retry: CHAOS_RETRY })
  async onUserUpdated(data: UserEventData, ctx: EventContext): Promise<void> {
    await this.apply(data, ctx);
  }

  private async apply(data: UserEventData, ctx: EventContext): Promise<void> {
    if (data.poison) throw new NonRetryableError(`${ctx.eventType} ${ctx.eventId} is marked poison`);
    if (handlerMs > 0) await work(handlerMs);
    await ctx.manager.query(`INSERT INTO ${effects} (event_id, consumer, event_type, user_id, version, instance) VALUES ($1, $2, $3, $4, $5, $6)`, [
      ctx.eventId,
      ctx.consumer,
      ctx.eventType,
      data.userId,
      data.version,
      instance,
    ]);
    // Created and updated events travel on different queues: the copy keeps the newest version whatever the order.
    await ctx.manager.query(
      `INSERT INTO ${customers} AS c (id, name, version) VALUES ($1, $2, $3) ` +
        `ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version WHERE c.version < EXCLUDED.version`,
      [data.userId, data.name, data.version],
    );
  }
}

@Module({
  imports: [
    TypeOrmModule.forRoot({ type: 'postgres', url: env('DATABASE_URL'), autoLoadEntities: true, synchronize: false, logging: false }),
    SyncModule.forRoot({ service: names.service, exchange: names.exchange, url: AMQP_URL, publishTimeout: '5s', reconnectDelay: '500ms', outbox: false }),
  ],
  providers: [ChaosBilling],
})
class ChaosConsumerModule {}

const app = await NestFactory.createApplicationContext(ChaosConsumerModule, { logger: ['log', 'warn', 'error'] });
closeOnSigterm(app);
console.log('READY');
