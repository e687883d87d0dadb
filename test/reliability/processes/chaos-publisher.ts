/**
 * The users service of the chaos run: commits every planned event through the outbox, each in
 * one transaction with the change of its own `users` row, and keeps going through broker and
 * PostgreSQL outages. A transaction that fails (the database restarting) is run again after a
 * short backoff; since the outcome of a failed COMMIT is unknown, each run first checks whether
 * the user's row already holds this version, and the event id is fixed by the plan, so a
 * retried transaction never commits an event twice.
 *
 * Env: RUN_ID, DATABASE_URL (PostgreSQL) and the CHAOS_* settings of chaos-plan.ts.
 * Prints `READY`, `PROGRESS committed=<n> txRetries=<n>` every 100 commits, `RETRY ...` for every
 * failed transaction, then `DONE committed=<n> txRetries=<n> alreadyCommitted=<n>`, and stays up
 * (its relay draining the outbox) until SIGTERM (graceful close, exit 0).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { EntityManager } from 'typeorm';
import { SyncModule, SyncPublisher } from '../../../lib/index.js';
import { AMQP_URL } from '../../support/env.js';
import { ChaosPlan, chaosConfig, chaosNames, type PlannedEvent } from '../chaos-plan.js';
import { closeOnSigterm } from '../../support/processes/close-on-sigterm.js';

/** A transaction that still fails after this long is not an outage the run plans for: give up loudly. */
const GIVE_UP_AFTER_MS = 120_000;
const PROGRESS_EVERY = 100;

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const config = chaosConfig();
const names = chaosNames(env('RUN_ID'));
const plan = new ChaosPlan(names.runId, config.events, config.updatesPerUser, config.poison);
const users = names.tables.users;

@Module({
  imports: [
    TypeOrmModule.forRoot({ type: 'postgres', url: env('DATABASE_URL'), autoLoadEntities: true, synchronize: false, logging: false }),
    SyncModule.forRoot({
      service: names.publisher,
      exchange: names.exchange,
      url: AMQP_URL,
      publishTimeout: '5s',
      reconnectDelay: '500ms',
      outbox: { pollInterval: '200ms', retryDelay: '200ms', maxRetryDelay: '2s' },
    }),
  ],
})
class ChaosPublisherModule {}

const app = await NestFactory.createApplicationContext(ChaosPublisherModule, { logger: ['log', 'warn', 'error'] });
closeOnSigterm(app);
console.log('READY');

const publisher = app.get(SyncPublisher);
let committed = 0;
let txRetries = 0;
let alreadyCommitted = 0;
let started = 0;
const startedAt = Date.now();

/** Writes the user's row for this version and the event, in one transaction; false if an earlier try had committed it. */
async function commitOnce(event: PlannedEvent): Promise<boolean> {
  return publisher.transaction(async (manager: EntityManager) => {
    const rows: Array<{ version: number }> = await manager.query(`SELECT version FROM ${users} WHERE id = $1 FOR UPDATE`, [event.userId]);
    if (rows.length > 0 && rows[0].version >= event.version) return false;
    const data = plan.data(event);
    if (event.version === 0) {
      await manager.query(`INSERT INTO ${users} (id, name, version) VALUES ($1, $2, $3)`, [event.userId, data.name, event.version]);
    } else {
      await manager.query(`UPDATE ${users} SET name = $2, version = $3 WHERE id = $1`, [event.userId, data.name, event.version]);
    }
    await publisher.publish(event.eventType, data, { eventId: event.eventId, key: event.userId });
    return true;
  });
}

async function commit(event: PlannedEvent): Promise<void> {
  const firstTry = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      if (!(await commitOnce(event))) alreadyCommitted += 1;
      break;
    } catch (error) {
      if (Date.now() - firstTry > GIVE_UP_AFTER_MS) throw error;
      txRetries += 1;
      const delay = Math.min(2_000, 100 * 2 ** (attempt - 1));
      console.log(`RETRY ${event.eventType} ${event.eventId} after attempt ${attempt} failed (${(error as Error).message}); again in ${delay} ms`);
      await sleep(delay);
    }
  }
  committed += 1;
  if (committed % PROGRESS_EVERY === 0) console.log(`PROGRESS committed=${committed} txRetries=${txRetries}`);
}

/** Keeps the publisher at CHAOS_RATE events per second at most, so the faults land while events flow. */
async function pace(): Promise<void> {
  const slot = started++;
  if (config.rate === 0) return;
  const due = startedAt + (slot * 1000) / config.rate;
  if (due > Date.now()) await sleep(due - Date.now());
}

/** Each lane owns the users u with u % lanes === lane, so a user's events are committed in order. */
async function lane(index: number): Promise<void> {
  for (let user = index; user < plan.users; user += config.lanes) {
    for (const eventIndex of plan.eventsOfUser(user)) {
      await pace();
      await commit(plan.event(eventIndex));
    }
  }
}

try {
  await Promise.all(Array.from({ length: config.lanes }, (_, index) => lane(index)));
  console.log(`DONE committed=${committed} txRetries=${txRetries} alreadyCommitted=${alreadyCommitted}`);
} catch (error) {
  console.error(`FAILED after committed=${committed}: ${(error as Error).stack}`);
  process.exit(1);
}
