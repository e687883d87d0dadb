/**
 * Scenario (a), consuming: raw amqplib, prefetch, manual ack after the upsert (pg Pool).
 * A failed event is nacked without requeue: the queue dead-letters it to a TTL queue that
 * sends it back (the usual hand-made retry tier). No dedupe.
 */
import { createRequire } from 'node:module';
import amqp, { type ConsumeMessage } from 'amqplib';
import pg from 'pg';
import type { UserEvent } from './runtime/events.js';
import { upsertParams, upsertSql, userRow } from './runtime/events.js';
import { EVENT_TYPE } from './runtime/protocol.js';
import { consumerTracker, serveConsumer } from './runtime/roles.js';
import { PlannedFailure } from './runtime/tracker.js';
import { launch, workerConfig } from './runtime/worker.js';

const config = workerConfig();
const tracker = consumerTracker(config, createRequire(import.meta.url));

async function main(): Promise<void> {
  if (config.database.type !== 'postgres') throw new Error('scenario a writes to PostgreSQL');
  const pool = new pg.Pool({ connectionString: config.database.url, max: config.poolSize });
  const upsert = upsertSql(config.database.schema, config.usersTable);
  const connection = await amqp.connect(config.amqpUrl);
  const channel = await connection.createChannel();
  await channel.assertExchange(config.exchange, 'topic', { durable: true });
  await channel.assertQueue(config.queue, { durable: true, arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': config.retryQueue } });
  await channel.bindQueue(config.queue, config.exchange, EVENT_TYPE);
  await channel.prefetch(config.prefetch);

  const handle = async (message: ConsumeMessage): Promise<void> => {
    try {
      const user = JSON.parse(message.content.toString()) as UserEvent;
      const fail = tracker.start(message, user);
      await pool.query(upsert, upsertParams(userRow(user)));
      if (fail) throw new PlannedFailure(user.seq);
      tracker.succeed(message);
      channel.ack(message);
    } catch {
      try {
        channel.nack(message, false, false);
      } catch {
        // The channel closed (broker restart): the broker requeues the message itself.
      }
    }
  };
  const { consumerTag } = await channel.consume(config.queue, (message) => message && void handle(message), { noAck: false });

  serveConsumer(config, tracker, async () => {
    await channel.cancel(consumerTag);
    await channel.close();
    await connection.close();
    await pool.end();
  });
}

launch(main);
