import { Injectable } from '@nestjs/common';
import { Column, DataSource, Entity, PrimaryGeneratedColumn } from 'typeorm';
import { deadLetterQueueName, EventContext, OnEvent, retryQueueName, SyncProcessedEvent } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker, leftOnQueues } from '../support/broker.js';
import { queueDepth, startBroker, stopBroker } from '../support/broker-control.js';
import { deferred } from '../support/deferred.js';
import { POSTGRES_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';

/** No unique key on event_id: a second effect of one event would show up as a second row. */
@Entity('test_restart_effects')
class RestartEffect {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ name: 'event_id', type: 'varchar', length: 200 }) eventId!: string;
}

const N = 300;
/** The handler run that is in flight when the broker goes down. */
const BLOCK_AT = 101;
const RETRY_DELAY_MS = 100;

function envelope(eventId: string, n: number): string {
  return JSON.stringify({ eventId, eventType: 'ItemSynced', data: { n }, timestamp: new Date().toISOString(), source: 'restart-producer' });
}

/** A raw producer that survives the broker closing its connection under it. */
async function connectProducer(): Promise<Broker> {
  const producer = await Broker.connect();
  producer.connection.on('error', () => undefined);
  producer.channel.on('error', () => undefined);
  return producer;
}

describe('a broker restart while consuming (PostgreSQL)', () => {
  const consumer = unique('RestartProjection.onItem');
  const runs: string[] = [];
  const blocked = deferred();
  const release = deferred();
  let app: TestApp;
  let db: DataSource;
  let closed = false;

  @Injectable()
  class RestartProjection {
    @OnEvent('ItemSynced', { consumer })
    async onItem(_data: { n: number }, ctx: EventContext) {
      runs.push(ctx.eventId);
      if (runs.length === BLOCK_AT) {
        blocked.resolve();
        await release.promise;
      }
      await ctx.manager.save(RestartEffect, { consumer, eventId: ctx.eventId });
    }
  }

  beforeAll(async () => {
    app = await startApp({
      engine: 'postgres',
      providers: [RestartProjection],
      entities: [RestartEffect],
      keepTopology: true,
      sync: { reconnectDelay: '200ms', retry: { attempts: 3, delays: [RETRY_DELAY_MS] } },
    });
    db = await new DataSource({ type: 'postgres', url: POSTGRES_URL, entities: [RestartEffect, SyncProcessedEvent] }).initialize();
  });

  afterAll(async () => {
    release.resolve();
    await startBroker();
    if (app) {
      if (!closed) await app.close();
      const queue = app.queueOf(consumer);
      const broker = await Broker.connect();
      await broker.deleteQueues(queue, retryQueueName(queue, RETRY_DELAY_MS), deadLetterQueueName(queue));
      await broker.deleteExchange(app.exchange);
      await broker.close();
    }
    if (db) {
      await db.getRepository(RestartEffect).delete({ consumer });
      await db.getRepository(SyncProcessedEvent).delete({ consumer });
      await db.destroy();
    }
  });

  it('handles every event exactly once in effect across stop_app/start_app, without restarting the app', async () => {
    const queue = app.queueOf(consumer);
    const firstIds = Array.from({ length: N }, (_, i) => unique(`before-${i}`));
    const secondIds = Array.from({ length: N }, (_, i) => unique(`after-${i}`));

    let producer = await connectProducer();
    await Promise.all(firstIds.map((id, i) => producer.publishRaw(app.exchange, 'ItemSynced', envelope(id, i), { messageId: id, contentType: 'application/json' })));

    await blocked.promise;
    expect(runs.length).toBe(BLOCK_AT);
    try {
      await stopBroker();
      // The blocked run commits while the broker is down: its ack is lost, so the redelivery must be absorbed.
      release.resolve();
    } finally {
      await startBroker();
    }

    await producer.close();
    producer = await connectProducer();
    await Promise.all(secondIds.map((id, i) => producer.publishRaw(app.exchange, 'ItemSynced', envelope(id, N + i), { messageId: id, contentType: 'application/json' })));
    await producer.close();

    // Runs of a batch are counted as handled when the batch commits: wait for the commits, not the runs.
    await waitFor(() => app.metrics.snapshot(consumer).handled >= 2 * N, { timeoutMs: 60_000, what: `${2 * N} events handled (have ${new Set(runs).size} run)` });
    const all = [...firstIds, ...secondIds];
    expect(new Set(runs)).toEqual(new Set(all));
    expect(runs).toHaveLength(2 * N);
    expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 2 * N, retried: 0, deadLettered: 0 });
    expect(app.metrics.snapshot(consumer).duplicates).toBeGreaterThanOrEqual(1);

    expect(await db.getRepository(RestartEffect).countBy({ consumer })).toBe(2 * N);
    const distinct = await db.getRepository(RestartEffect).createQueryBuilder('e').select('COUNT(DISTINCT e.event_id)', 'n').where('e.consumer = :consumer', { consumer }).getRawOne<{ n: string }>();
    expect(Number(distinct?.n)).toBe(2 * N);
    expect(await db.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(2 * N);

    // Redeliveries of the messages acked on the dead channel settle as duplicates: nothing stays ready or unacked.
    await waitFor(
      async () => {
        const depth = await queueDepth(queue);
        return depth?.consumers === 1 && depth.ready === 0 && depth.unacked === 0;
      },
      { what: `${queue} drained with its one consumer re-attached` },
    );
    await app.close();
    closed = true;
    expect(await leftOnQueues(queue)).toEqual({ queue: 0, dlq: 0 });
  });
});
