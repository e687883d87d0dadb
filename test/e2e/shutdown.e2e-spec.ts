import { Injectable, type Type } from '@nestjs/common';
import { Column, DataSource, Entity, In, PrimaryGeneratedColumn } from 'typeorm';
import { deadLetterQueueName, EventContext, OnEvent, SyncProcessedEvent } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker, leftOnQueues } from '../support/broker.js';
import { deferred, track } from '../support/deferred.js';
import { POSTGRES_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';

/** No unique key on event_id: a second effect of one event would show up as a second row. */
@Entity('test_shutdown_effects')
class ShutdownEffect {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ name: 'event_id', type: 'varchar', length: 200 }) eventId!: string;
}

function envelope(eventId: string): string {
  return JSON.stringify({ eventId, eventType: 'TaskQueued', data: { eventId }, timestamp: new Date().toISOString(), source: 'shutdown-producer' });
}

describe('graceful shutdown (PostgreSQL)', () => {
  let db: DataSource;
  let broker: Broker;
  const consumers: string[] = [];
  const queues: string[] = [];
  const exchanges: string[] = [];

  beforeAll(async () => {
    broker = await Broker.connect();
    db = await new DataSource({ type: 'postgres', url: POSTGRES_URL, entities: [ShutdownEffect, SyncProcessedEvent] }).initialize();
  });

  afterAll(async () => {
    await broker.deleteQueues(...queues.flatMap((queue) => [queue, deadLetterQueueName(queue)]));
    for (const exchange of exchanges) await broker.deleteExchange(exchange);
    await broker.close();
    for (const consumer of consumers) {
      await db.getRepository(ShutdownEffect).delete({ consumer });
      await db.getRepository(SyncProcessedEvent).delete({ consumer });
    }
    await db.destroy();
  });

  /** Starts an app whose queues outlive it, so the test can count what close() left behind. */
  async function start(provider: Type, consumer: string, reuse?: TestApp): Promise<TestApp> {
    const app = await startApp({
      engine: 'postgres',
      providers: [provider],
      entities: [ShutdownEffect],
      keepTopology: true,
      service: reuse?.service,
      exchange: reuse?.exchange,
      sync: { retry: false, shutdownTimeout: '30s' },
    });
    consumers.push(consumer);
    queues.push(app.queueOf(consumer));
    exchanges.push(app.exchange);
    return app;
  }

  async function consumerCount(queue: string): Promise<number> {
    return (await broker.channel.checkQueue(queue)).consumerCount;
  }

  it('waits for the handler in flight: its writes and dedupe row commit and its message is acked', async () => {
    const consumer = unique('SlowProjection.onTask');
    const started = deferred();
    const release = deferred();
    const runs: string[] = [];

    @Injectable()
    class SlowProjection {
      @OnEvent('TaskQueued', { consumer })
      async onTask(_data: unknown, ctx: EventContext) {
        runs.push(ctx.eventId);
        await ctx.manager.save(ShutdownEffect, { consumer, eventId: ctx.eventId });
        started.resolve();
        await release.promise;
      }
    }

    const app = await start(SlowProjection, consumer);
    const queue = app.queueOf(consumer);
    try {
      const eventId = unique('task');
      await broker.publishRaw(app.exchange, 'TaskQueued', envelope(eventId), { messageId: eventId });
      await started.promise;

      const closing = track(app.close());
      // Consuming has stopped (the broker sees no consumer) while close() still waits for the handler.
      await waitFor(async () => (await consumerCount(queue)) === 0, { what: 'the consumer to be cancelled' });
      expect(closing.settled).toBe(false);
      release.resolve();
      await closing.promise;

      expect(runs).toEqual([eventId]);
      expect(await db.getRepository(ShutdownEffect).countBy({ consumer, eventId })).toBe(1);
      expect(await db.getRepository(SyncProcessedEvent).countBy({ consumer, eventId })).toBe(1);
      expect(await leftOnQueues(queue)).toEqual({ queue: 0, dlq: 0 });
    } finally {
      release.resolve();
    }
  });

  it('returns deliveries that had not started to the queue; the next instance handles each once', async () => {
    const consumer = unique('SerialProjection.onTask');
    const started = deferred();
    const release = deferred();
    const runs: string[] = [];

    @Injectable()
    class SerialProjection {
      @OnEvent('TaskQueued', { consumer, concurrency: 1 })
      async onTask(_data: unknown, ctx: EventContext) {
        runs.push(ctx.eventId);
        await ctx.manager.save(ShutdownEffect, { consumer, eventId: ctx.eventId });
        if (runs.length === 1) {
          started.resolve();
          await release.promise;
        }
      }
    }

    const first = await start(SerialProjection, consumer);
    const queue = first.queueOf(consumer);
    const ids = Array.from({ length: 5 }, (_, i) => unique(`task-${i}`));
    let second: TestApp | undefined;
    try {
      for (const id of ids) await broker.publishRaw(first.exchange, 'TaskQueued', envelope(id), { messageId: id });
      await started.promise;
      // All five are delivered (prefetch covers them): one runs, four wait in the consumer.
      await waitFor(async () => (await broker.messageCount(queue)) === 0, { what: 'all five delivered to the consumer' });
      expect(runs).toEqual([ids[0]]);

      const closing = track(first.close());
      await waitFor(async () => (await consumerCount(queue)) === 0, { what: 'the consumer to be cancelled' });
      expect(closing.settled).toBe(false);
      release.resolve();
      await closing.promise;

      expect(runs).toEqual([ids[0]]);
      const fresh = await Broker.connect();
      try {
        expect(await fresh.messageCount(queue)).toBe(4);
      } finally {
        await fresh.close();
      }

      second = await start(SerialProjection, consumer, first);
      expect(second.queueOf(consumer)).toBe(queue);
      await waitFor(() => runs.length >= 5, { what: 'the second instance to handle the four returned events' });
      await waitFor(async () => (await broker.messageCount(queue)) === 0, { what: `${queue} drained` });
      await second.close();
      second = undefined;

      expect([...runs].sort()).toEqual([...ids].sort());
      expect(await db.getRepository(ShutdownEffect).countBy({ consumer, eventId: In(ids) })).toBe(5);
      expect(await db.getRepository(SyncProcessedEvent).countBy({ consumer, eventId: In(ids) })).toBe(5);
      expect(await leftOnQueues(queue)).toEqual({ queue: 0, dlq: 0 });
    } finally {
      release.resolve();
      await second?.close();
    }
  });

  it('hands waiting deliveries back as soon as consuming stops, so another instance handles them while the first still drains', async () => {
    const consumer = unique('HandoverProjection.onTask');
    const started = deferred();
    const release = deferred();
    const runs: string[] = [];

    @Injectable()
    class HandoverProjection {
      @OnEvent('TaskQueued', { consumer, concurrency: 1 })
      async onTask(_data: unknown, ctx: EventContext) {
        runs.push(ctx.eventId);
        await ctx.manager.save(ShutdownEffect, { consumer, eventId: ctx.eventId });
        if (runs.length === 1) {
          started.resolve();
          await release.promise;
        }
      }
    }

    const first = await start(HandoverProjection, consumer);
    const queue = first.queueOf(consumer);
    const ids = Array.from({ length: 5 }, (_, i) => unique(`handover-${i}`));
    let second: TestApp | undefined;
    let closing: ReturnType<typeof track<void>> | undefined;
    try {
      for (const id of ids) await broker.publishRaw(first.exchange, 'TaskQueued', envelope(id), { messageId: id });
      await started.promise;
      await waitFor(async () => (await broker.messageCount(queue)) === 0, { what: 'all five delivered to the first instance' });

      closing = track(first.close());
      // The first handler is still blocked, so close() is draining: the four that never started must already be back.
      await waitFor(async () => (await broker.messageCount(queue)) === 4, { what: 'the four waiting deliveries back in the queue during the drain' });
      second = await start(HandoverProjection, consumer, first);
      await waitFor(() => runs.length >= 5, { what: 'the second instance to handle the four while the first drains' });
      expect(closing.settled).toBe(false);

      release.resolve();
      await closing.promise;
      await second.close();
      second = undefined;

      expect([...runs].sort()).toEqual([...ids].sort());
      expect(await db.getRepository(ShutdownEffect).countBy({ consumer, eventId: In(ids) })).toBe(5);
      expect(await db.getRepository(SyncProcessedEvent).countBy({ consumer, eventId: In(ids) })).toBe(5);
      expect(await leftOnQueues(queue)).toEqual({ queue: 0, dlq: 0 });
    } finally {
      release.resolve();
      await closing?.promise;
      await second?.close();
    }
  });
});
