import { Injectable } from '@nestjs/common';
import { Column, Entity, In, PrimaryGeneratedColumn } from 'typeorm';
import { deadLetterQueueName, EventContext, OnEvent, retryQueueName, SyncProcessedEvent } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { ENGINES, typeOrmOptions } from '../support/databases.js';
import { unique, waitFor } from '../support/wait.js';

/** A handler's effect: one row per committed run, so a second application shows as a second row. */
@Entity('test_dedupe_effects')
class DedupeEffect {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ name: 'event_id', type: 'varchar', length: 200 }) eventId!: string;
  @Column({ type: 'int' }) attempt!: number;
}

function envelope(eventId: string, eventType: string, data: unknown): string {
  return JSON.stringify({ eventId, eventType, data, timestamp: new Date().toISOString(), source: 'foreign' });
}

describe.each(ENGINES)('dedupe on %s', (engine) => {
  let broker: Broker;

  beforeAll(async () => {
    broker = await Broker.connect();
  });

  afterAll(async () => {
    await broker.close();
  });

  describe('one consumer', () => {
    let app: TestApp;
    const copied = unique('Dedupe.onCopied');
    const flaky = unique('Dedupe.onFlaky');
    const copiedRuns: EventContext[] = [];
    const flakyRuns: EventContext[] = [];

    @Injectable()
    class Projection {
      @OnEvent('Dedupe.Copied', { consumer: copied })
      async onCopied(_data: unknown, ctx: EventContext) {
        copiedRuns.push(ctx);
        await ctx.manager.insert(DedupeEffect, { consumer: copied, eventId: ctx.eventId, attempt: ctx.attempt });
      }

      @OnEvent('Dedupe.Flaky', { consumer: flaky, retry: { attempts: 3, delays: [100] } })
      async onFlaky(_data: unknown, ctx: EventContext) {
        flakyRuns.push(ctx);
        await ctx.manager.insert(DedupeEffect, { consumer: flaky, eventId: ctx.eventId, attempt: ctx.attempt });
        if (ctx.attempt === 1) throw new Error('the first attempt fails after writing');
      }
    }

    beforeAll(async () => {
      app = await startApp({ engine, providers: [Projection], entities: [DedupeEffect] });
    });

    afterAll(async () => {
      await app.dataSource.getRepository(DedupeEffect).delete({ consumer: In([copied, flaky]) });
      await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer: In([copied, flaky]) });
      await app.close();
    });

    it('applies five copies of one event id once and counts four duplicates', async () => {
      const eventId = unique('evt');
      const body = envelope(eventId, 'Dedupe.Copied', { n: 1 });
      for (let copy = 0; copy < 5; copy += 1) await broker.publishRaw(app.exchange, 'Dedupe.Copied', body);

      await waitFor(() => app.metrics.snapshot(copied).handled + app.metrics.snapshot(copied).duplicates >= 5, { what: 'five deliveries settled' });

      expect(copiedRuns.map((ctx) => ctx.eventId)).toEqual([eventId]);
      expect(await app.dataSource.getRepository(DedupeEffect).countBy({ consumer: copied, eventId })).toBe(1);
      expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: copied, eventId })).toBe(1);
      expect(app.metrics.snapshot(copied)).toMatchObject({ handled: 1, duplicates: 4, retried: 0, deadLettered: 0 });
    });

    it('stores ids with quotes, backslashes and dollar signs exactly, and dedupes them', async () => {
      // Ids are free text (1 to 200 characters, no NUL): quoting in any SQL the library builds must hold.
      const duplicatesBefore = app.metrics.snapshot(copied).duplicates;
      const ids = [`${unique('evt')}-it's`, `${unique('evt')}-back\\slash\\'`, `${unique('evt')}-$$-$1-é✓`];
      for (const id of [...ids, ...ids]) await broker.publishRaw(app.exchange, 'Dedupe.Copied', envelope(id, 'Dedupe.Copied', { id }));

      await waitFor(async () => (await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: copied, eventId: In(ids) })) === ids.length, {
        what: 'the three ids recorded',
      });
      await waitFor(() => app.metrics.snapshot(copied).duplicates === duplicatesBefore + ids.length, { what: 'the copies seen as duplicates' });
      const stored = await app.dataSource.getRepository(SyncProcessedEvent).findBy({ consumer: copied, eventId: In(ids) });
      expect(stored.map((row) => row.eventId).sort()).toEqual([...ids].sort());
      expect((await app.dataSource.getRepository(DedupeEffect).findBy({ consumer: copied, eventId: In(ids) })).map((row) => row.eventId).sort()).toEqual([...ids].sort());
    });

    it('rolls back the writes of a failed attempt and applies the retry once', async () => {
      const eventId = unique('evt');
      await broker.publishRaw(app.exchange, 'Dedupe.Flaky', envelope(eventId, 'Dedupe.Flaky', { n: 2 }));

      await waitFor(() => app.metrics.snapshot(flaky).handled >= 1, { what: 'the retried event handled' });

      expect(flakyRuns.map((ctx) => [ctx.eventId, ctx.attempt])).toEqual([
        [eventId, 1],
        [eventId, 2],
      ]);
      const effects = await app.dataSource.getRepository(DedupeEffect).findBy({ consumer: flaky, eventId });
      expect(effects.map((effect) => effect.attempt)).toEqual([2]);
      expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: flaky, eventId })).toBe(1);
      expect(app.metrics.snapshot(flaky)).toMatchObject({ handled: 1, retried: 1, duplicates: 0, deadLettered: 0 });
    });
  });

  describe('two consumers on one queue', () => {
    const consumer = unique('Dedupe.onContended');
    const runs: string[] = [];
    const typeorm = engine === 'sqlite' ? typeOrmOptions('sqlite', [DedupeEffect]) : undefined;
    let first: TestApp;
    let second: TestApp;

    @Injectable()
    class ContendedProjection {
      @OnEvent('Dedupe.Contended', { consumer, concurrency: 8, retry: { attempts: 3, delays: [50] } })
      async onContended(_data: unknown, ctx: EventContext) {
        runs.push(ctx.eventId);
        await ctx.manager.insert(DedupeEffect, { consumer, eventId: ctx.eventId, attempt: ctx.attempt });
      }
    }

    beforeAll(async () => {
      first = await startApp({ engine, providers: [ContendedProjection], entities: [DedupeEffect], typeorm, keepTopology: true });
      second = await startApp({
        engine,
        providers: [ContendedProjection],
        entities: [DedupeEffect],
        typeorm,
        keepTopology: true,
        service: first.service,
        exchange: first.exchange,
      });
    });

    afterAll(async () => {
      await first.dataSource.getRepository(DedupeEffect).delete({ consumer });
      await first.dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
      await Promise.all([first.close(), second.close()]);
      const queue = first.queueOf(consumer);
      await broker.deleteQueues(queue, deadLetterQueueName(queue), retryQueueName(queue, 50));
      await broker.deleteExchange(first.exchange);
      typeorm?.cleanup();
    });

    it('never runs the handler twice for one event id delivered to both at once', async () => {
      const eventIds = Array.from({ length: 10 }, () => unique('evt'));
      const bodies = eventIds.map((eventId) => envelope(eventId, 'Dedupe.Contended', { eventId }));
      const publishes: Promise<void>[] = [];
      for (let copy = 0; copy < 20; copy += 1) {
        for (const body of bodies) publishes.push(broker.publishRaw(first.exchange, 'Dedupe.Contended', body));
      }
      await Promise.all(publishes);

      const settled = (app: TestApp) => {
        const counters = app.metrics.snapshot(consumer);
        return counters.handled + counters.duplicates;
      };
      await waitFor(() => settled(first) + settled(second) >= 200, { timeoutMs: 30_000, what: '200 deliveries settled across both consumers' });

      expect(settled(first)).toBeGreaterThan(0);
      expect(settled(second)).toBeGreaterThan(0);
      expect(runs).toHaveLength(10);
      expect(new Set(runs)).toEqual(new Set(eventIds));
      const effects = await first.dataSource.getRepository(DedupeEffect).findBy({ consumer });
      const perEvent = new Map<string, number>();
      for (const effect of effects) perEvent.set(effect.eventId, (perEvent.get(effect.eventId) ?? 0) + 1);
      expect(Object.fromEntries(perEvent)).toEqual(Object.fromEntries(eventIds.map((eventId) => [eventId, 1])));
      expect(await first.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(10);
      expect(first.metrics.snapshot(consumer).handled + second.metrics.snapshot(consumer).handled).toBe(10);
      expect(first.metrics.snapshot(consumer).duplicates + second.metrics.snapshot(consumer).duplicates).toBe(190);
      // A lock conflict surfacing as an error (instead of as a duplicate) would show up as a retry.
      expect(first.metrics.snapshot(consumer).retried + second.metrics.snapshot(consumer).retried).toBe(0);
    });
  });
});
