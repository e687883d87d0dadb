import { createHash } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import type { GetMessage } from 'amqplib';
import { Column, Entity, In, PrimaryColumn, PrimaryGeneratedColumn } from 'typeorm';
import { deadLetterQueueName, EventContext, OnEvent, retryQueueName, SYNC_HEADERS, SyncProcessedEvent, SyncPublisher } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { deferred } from '../support/deferred.js';
import { typeOrmOptions } from '../support/databases.js';
import { unique, waitFor } from '../support/wait.js';

/** One row per committed handler run: a second application of an event shows as a second row. */
@Entity('test_edge_effects')
class EdgeEffect {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ name: 'event_id', type: 'varchar', length: 200 }) eventId!: string;
  @Column({ type: 'int' }) attempt!: number;
  @Column({ type: 'varchar', length: 200, nullable: true }) note!: string | null;
}

/** A row every run of one event updates: an event applied twice counts 2. */
@Entity('test_edge_counters')
class EdgeCounter {
  @PrimaryColumn({ type: 'varchar', length: 200 }) id!: string;
  @Column({ type: 'int' }) n!: number;
}

function envelope(eventId: string, eventType: string, data: unknown = { eventId }): string {
  return JSON.stringify({ eventId, eventType, data, timestamp: new Date().toISOString(), source: 'foreign' });
}

function headersOf(message: GetMessage): Record<string, unknown> {
  return message.properties.headers ?? {};
}

function eventIdOf(message: GetMessage): string {
  return (JSON.parse(message.content.toString('utf8')) as { eventId: string }).eventId;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

describe('edge cases of one service (PostgreSQL)', () => {
  let app: TestApp;
  let broker: Broker;
  const burst = unique('Edge.onBurst');
  const multi = unique('Edge.onMulti');
  const garbage = unique('Edge.onGarbage');
  const large = unique('Edge.onLarge');
  const proto = unique('Edge.onProto');
  const reused = unique('Edge.onReused');
  const consumers = [burst, multi, garbage, large, proto, reused];
  const runs = new Map<string, EventContext[]>(consumers.map((consumer) => [consumer, []]));
  const ran = (consumer: string) => runs.get(consumer)!;
  let inFlight = 0;
  let maxInFlight = 0;
  const protoData: unknown[] = [];

  @Injectable()
  class Edge {
    @OnEvent('Edge.Burst', { consumer: burst, concurrency: 5 })
    async onBurst(_data: unknown, ctx: EventContext) {
      inFlight += 1;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        ran(burst).push(ctx);
        await ctx.manager.insert(EdgeEffect, { consumer: burst, eventId: ctx.eventId, attempt: ctx.attempt, note: null });
      } finally {
        inFlight -= 1;
      }
    }

    @OnEvent(['Edge.A', 'Edge.B'], { consumer: multi })
    async onMulti(_data: unknown, ctx: EventContext) {
      ran(multi).push(ctx);
      await ctx.manager.insert(EdgeEffect, { consumer: multi, eventId: ctx.eventId, attempt: ctx.attempt, note: ctx.eventType });
    }

    @OnEvent('Edge.Garbage', { consumer: garbage, retry: { attempts: 3, delays: [50] } })
    async onGarbage(_data: unknown, ctx: EventContext) {
      ran(garbage).push(ctx);
      throw new Error(`garbage attempt header on ${ctx.eventId}`);
    }

    @OnEvent('Edge.Large', { consumer: large, retry: { attempts: 2, delays: [50] } })
    async onLarge(data: { blob: string }, ctx: EventContext) {
      ran(large).push(ctx);
      await ctx.manager.insert(EdgeEffect, { consumer: large, eventId: ctx.eventId, attempt: ctx.attempt, note: sha256(data.blob) });
      // The first run fails so the 2 MB body also travels through the retry tier.
      if (ctx.attempt === 1) throw new Error('the first run of a large event fails');
    }

    @OnEvent('Edge.Proto', { consumer: proto })
    async onProto(data: unknown, ctx: EventContext) {
      ran(proto).push(ctx);
      protoData.push(data);
      await ctx.manager.insert(EdgeEffect, { consumer: proto, eventId: ctx.eventId, attempt: ctx.attempt, note: Object.keys(data as object).sort().join(',') });
    }

    @OnEvent('Edge.Reused', { consumer: reused })
    async onReused(data: { v: number }, ctx: EventContext) {
      ran(reused).push(ctx);
      await ctx.manager.insert(EdgeEffect, { consumer: reused, eventId: ctx.eventId, attempt: ctx.attempt, note: `v${data.v}` });
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    // Large events are allowed up to 4 MiB here (the default limit is 1 MiB).
    app = await startApp({ engine: 'postgres', providers: [Edge], entities: [EdgeEffect], sync: { retry: { attempts: 2, delays: [50] }, maxMessageBytes: 4 * 1024 * 1024 } });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(EdgeEffect).delete({ consumer: In(consumers) });
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer: In(consumers) });
    await app.close();
    await broker.close();
  });

  it('handles 200 events once each with concurrency 5, running more than one but at most five at once', async () => {
    const eventIds = Array.from({ length: 200 }, (_, i) => `${burst}-${i}`);
    await Promise.all(eventIds.map((eventId) => broker.publishRaw(app.exchange, 'Edge.Burst', envelope(eventId, 'Edge.Burst'))));

    await waitFor(() => app.metrics.snapshot(burst).handled >= 200, { what: '200 events handled' });

    expect(ran(burst)).toHaveLength(200);
    expect(new Set(ran(burst).map((ctx) => ctx.eventId))).toEqual(new Set(eventIds));
    expect(await app.dataSource.getRepository(EdgeEffect).countBy({ consumer: burst })).toBe(200);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: burst })).toBe(200);
    expect(app.metrics.snapshot(burst)).toMatchObject({ handled: 200, duplicates: 0, retried: 0, deadLettered: 0 });
    expect(maxInFlight).toBeGreaterThan(1);
    expect(maxInFlight).toBeLessThanOrEqual(5);
  });

  it('treats a garbage sync-attempt header sanely: unreadable, zero or negative as 1, a huge count dead-letters after one run', async () => {
    const cases = [
      { eventId: unique('evt-abc'), header: 'abc' as string | number, runs: [1, 2, 3], attempts: 3 },
      { eventId: unique('evt-neg'), header: -3, runs: [1, 2, 3], attempts: 3 },
      { eventId: unique('evt-zero'), header: 0, runs: [1, 2, 3], attempts: 3 },
      { eventId: unique('evt-mixed'), header: '12x', runs: [1, 2, 3], attempts: 3 },
      // More digits than any real retry chain: unreadable, so it starts over instead of trusting it.
      { eventId: unique('evt-long'), header: '1000000000', runs: [1, 2, 3], attempts: 3 },
      { eventId: unique('evt-huge'), header: 100_000, runs: [100_000], attempts: 100_000 },
    ];
    for (const { eventId, header } of cases) {
      await broker.publishRaw(app.exchange, 'Edge.Garbage', envelope(eventId, 'Edge.Garbage'), { headers: { [SYNC_HEADERS.attempt]: header } });
    }

    const dead = await broker.takeAll(deadLetterQueueName(app.queueOf(garbage)), cases.length);

    expect(dead).toHaveLength(cases.length);
    for (const { eventId, runs: attempts, attempts: deadAttempts } of cases) {
      expect(ran(garbage).filter((ctx) => ctx.eventId === eventId).map((ctx) => ctx.attempt)).toEqual(attempts);
      const message = dead.find((candidate) => eventIdOf(candidate) === eventId)!;
      expect(headersOf(message)).toMatchObject({ [SYNC_HEADERS.reason]: 'exhausted', [SYNC_HEADERS.attempts]: deadAttempts, [SYNC_HEADERS.consumer]: garbage });
    }
    expect(ran(garbage)).toHaveLength(16);
    expect(await broker.messageCount(app.queueOf(garbage))).toBe(0);
    expect(await broker.messageCount(retryQueueName(app.queueOf(garbage), 50))).toBe(0);
    expect(app.metrics.snapshot(garbage)).toMatchObject({ handled: 0, retried: 10, deadLettered: 6 });
  });

  it('serves both event types of a multi-type handler and dead-letters a third sent straight to its queue', async () => {
    const [a, b, c] = ['A', 'B', 'C'].map((name) => unique(`evt-${name}`));
    await broker.publishRaw(app.exchange, 'Edge.A', envelope(a, 'Edge.A'));
    await broker.publishRaw(app.exchange, 'Edge.B', envelope(b, 'Edge.B'));
    const cBody = envelope(c, 'Edge.C');
    await broker.publishRaw('', app.queueOf(multi), cBody);

    const [dead, ...more] = await broker.takeAll(deadLetterQueueName(app.queueOf(multi)), 1);
    await waitFor(() => app.metrics.snapshot(multi).handled >= 2, { what: 'A and B handled' });

    expect(more).toHaveLength(0);
    expect(ran(multi).map((ctx) => [ctx.eventId, ctx.eventType]).sort()).toEqual(
      [
        [a, 'Edge.A'],
        [b, 'Edge.B'],
      ].sort(),
    );
    expect(dead.content.toString('utf8')).toBe(cBody);
    expect(headersOf(dead)).toMatchObject({ [SYNC_HEADERS.reason]: 'unhandled-event-type', [SYNC_HEADERS.consumer]: multi, [SYNC_HEADERS.attempts]: 1 });
    const effects = await app.dataSource.getRepository(EdgeEffect).findBy({ consumer: multi });
    expect(effects.map((effect) => effect.note).sort()).toEqual(['Edge.A', 'Edge.B']);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: multi, eventId: c })).toBe(0);
    expect(app.metrics.snapshot(multi)).toMatchObject({ handled: 2, deadLettered: 1, retried: 0 });
  });

  it('handles a 2 MB event published through SyncPublisher (maxMessageBytes 4 MiB), retried once, with its data intact', async () => {
    const blob = 'ü-0123456789abcdef'.repeat(Math.ceil((2 * 1024 * 1024) / 19)).slice(0, 2 * 1024 * 1024);
    const sent = await app.app.get(SyncPublisher).publish('Edge.Large', { blob });

    await waitFor(() => app.metrics.snapshot(large).handled >= 1, { what: 'the large event handled' });

    expect(ran(large).map((ctx) => [ctx.eventId, ctx.attempt])).toEqual([
      [sent.eventId, 1],
      [sent.eventId, 2],
    ]);
    const effects = await app.dataSource.getRepository(EdgeEffect).findBy({ consumer: large });
    expect(effects.map((effect) => [effect.attempt, effect.note])).toEqual([[2, sha256(blob)]]);
    expect(app.metrics.snapshot(large)).toMatchObject({ handled: 1, retried: 1, deadLettered: 0 });
  });

  it('hands over __proto__ and constructor keys as plain data without polluting Object.prototype', async () => {
    const eventId = unique('evt');
    const body =
      `{"__proto__":{"eventType":"Edge.Hijacked","polluted":"envelope"},"eventId":"${eventId}","eventType":"Edge.Proto",` +
      `"data":{"__proto__":{"polluted":"data"},"constructor":{"prototype":{"polluted":"constructor"}},"name":"x"},"timestamp":"2024-06-01T12:00:00Z"}`;
    await broker.publishRaw(app.exchange, 'Edge.Proto', body);

    await waitFor(() => app.metrics.snapshot(proto).handled >= 1, { what: 'the __proto__ event handled' });

    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((Object.prototype as Record<string, unknown>).polluted).toBeUndefined();
    expect(ran(proto).map((ctx) => [ctx.eventId, ctx.eventType])).toEqual([[eventId, 'Edge.Proto']]);
    const [data] = protoData as Record<string, unknown>[];
    expect(Object.prototype.hasOwnProperty.call(data, '__proto__')).toBe(true);
    expect(Object.getPrototypeOf(data)).toBe(Object.prototype);
    const effects = await app.dataSource.getRepository(EdgeEffect).findBy({ consumer: proto, eventId });
    expect(effects.map((effect) => effect.note)).toEqual(['__proto__,constructor,name']);
    expect(app.metrics.snapshot(proto)).toMatchObject({ handled: 1, deadLettered: 0 });
  });

  it('applies only the first of two publishes that reuse one eventId with different data, counting one duplicate', async () => {
    const eventId = unique('evt');
    const publisher = app.app.get(SyncPublisher);
    const first = await publisher.publish('Edge.Reused', { v: 1 }, { eventId });
    const second = await publisher.publish('Edge.Reused', { v: 2 }, { eventId });

    await waitFor(() => app.metrics.snapshot(reused).handled + app.metrics.snapshot(reused).duplicates >= 2, { what: 'both publishes settled' });

    expect([first.eventId, second.eventId]).toEqual([eventId, eventId]);
    expect(ran(reused).map((ctx) => ctx.eventId)).toEqual([eventId]);
    const effects = await app.dataSource.getRepository(EdgeEffect).findBy({ consumer: reused, eventId });
    expect(effects.map((effect) => effect.note)).toEqual(['v1']);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: reused, eventId })).toBe(1);
    expect(app.metrics.snapshot(reused)).toMatchObject({ handled: 1, duplicates: 1, retried: 0, deadLettered: 0 });
  });
});

describe('retry policies: module default, inheritance and per-handler overrides (PostgreSQL)', () => {
  let broker: Broker;
  const failing = (consumer: string, runs: Map<string, EventContext[]>) => async (ctx: EventContext) => {
    runs.get(consumer)!.push(ctx);
    throw new Error(`${consumer} always fails`);
  };

  beforeAll(async () => {
    broker = await Broker.connect();
  });

  afterAll(async () => {
    await broker.close();
  });

  async function deadLetterOf(app: TestApp, consumer: string, eventId: string): Promise<GetMessage> {
    const [dead, ...more] = await broker.takeAll(deadLetterQueueName(app.queueOf(consumer)), 1);
    expect(more).toHaveLength(0);
    expect(eventIdOf(dead)).toBe(eventId);
    return dead;
  }

  describe('with retry: false on the module', () => {
    let app: TestApp;
    const inherits = unique('NoRetry.onInherited');
    const overrides = unique('NoRetry.onOverridden');
    const runs = new Map<string, EventContext[]>([inherits, overrides].map((consumer) => [consumer, []]));

    @Injectable()
    class NoRetry {
      @OnEvent('NoRetry.Failed', { consumer: inherits })
      async onInherited(_data: unknown, ctx: EventContext) {
        await failing(inherits, runs)(ctx);
      }

      @OnEvent('NoRetry.Failed', { consumer: overrides, retry: { attempts: 2, delays: [50] } })
      async onOverridden(_data: unknown, ctx: EventContext) {
        await failing(overrides, runs)(ctx);
      }
    }

    beforeAll(async () => {
      app = await startApp({ engine: 'postgres', providers: [NoRetry], sync: { retry: false } });
    });

    afterAll(async () => {
      await app.close();
    });

    it('dead-letters an inheriting handler on its first failure, while a handler with its own policy retries', async () => {
      const eventId = unique('evt');
      await broker.publishRaw(app.exchange, 'NoRetry.Failed', envelope(eventId, 'NoRetry.Failed'));

      const inherited = await deadLetterOf(app, inherits, eventId);
      const overridden = await deadLetterOf(app, overrides, eventId);

      expect(runs.get(inherits)!.map((ctx) => ctx.attempt)).toEqual([1]);
      expect(runs.get(overrides)!.map((ctx) => ctx.attempt)).toEqual([1, 2]);
      expect(headersOf(inherited)).toMatchObject({ [SYNC_HEADERS.reason]: 'exhausted', [SYNC_HEADERS.attempts]: 1, [SYNC_HEADERS.consumer]: inherits });
      expect(headersOf(overridden)).toMatchObject({ [SYNC_HEADERS.reason]: 'exhausted', [SYNC_HEADERS.attempts]: 2, [SYNC_HEADERS.consumer]: overrides });
      expect(app.metrics.snapshot(inherits)).toMatchObject({ retried: 0, deadLettered: 1 });
      expect(app.metrics.snapshot(overrides)).toMatchObject({ retried: 1, deadLettered: 1 });
    });
  });

  describe('with a retry policy on the module', () => {
    let app: TestApp;
    const inherits = unique('Policy.onInherited');
    const shorter = unique('Policy.onShorter');
    const disabled = unique('Policy.onDisabled');
    const runs = new Map<string, EventContext[]>([inherits, shorter, disabled].map((consumer) => [consumer, []]));

    @Injectable()
    class Policy {
      @OnEvent('Policy.Failed', { consumer: inherits })
      async onInherited(_data: unknown, ctx: EventContext) {
        await failing(inherits, runs)(ctx);
      }

      @OnEvent('Policy.Failed', { consumer: shorter, retry: { attempts: 2, delays: [60] } })
      async onShorter(_data: unknown, ctx: EventContext) {
        await failing(shorter, runs)(ctx);
      }

      @OnEvent('Policy.Failed', { consumer: disabled, retry: false })
      async onDisabled(_data: unknown, ctx: EventContext) {
        await failing(disabled, runs)(ctx);
      }
    }

    beforeAll(async () => {
      app = await startApp({ engine: 'postgres', providers: [Policy], sync: { retry: { attempts: 3, delays: [50] } } });
    });

    afterAll(async () => {
      await app.close();
    });

    it('runs an inheriting handler `attempts` times, and each overriding handler as its own policy says', async () => {
      const eventId = unique('evt');
      await broker.publishRaw(app.exchange, 'Policy.Failed', envelope(eventId, 'Policy.Failed'));

      const inherited = await deadLetterOf(app, inherits, eventId);
      const short = await deadLetterOf(app, shorter, eventId);
      const none = await deadLetterOf(app, disabled, eventId);

      expect(runs.get(inherits)!.map((ctx) => ctx.attempt)).toEqual([1, 2, 3]);
      expect(runs.get(shorter)!.map((ctx) => ctx.attempt)).toEqual([1, 2]);
      expect(runs.get(disabled)!.map((ctx) => ctx.attempt)).toEqual([1]);
      expect(headersOf(inherited)).toMatchObject({ [SYNC_HEADERS.reason]: 'exhausted', [SYNC_HEADERS.attempts]: 3 });
      expect(headersOf(short)).toMatchObject({ [SYNC_HEADERS.reason]: 'exhausted', [SYNC_HEADERS.attempts]: 2 });
      expect(headersOf(none)).toMatchObject({ [SYNC_HEADERS.reason]: 'exhausted', [SYNC_HEADERS.attempts]: 1 });
      // Each handler's retry tier is named after its own delay: the module's for the inheriting one only.
      expect(await broker.messageCount(retryQueueName(app.queueOf(inherits), 50))).toBe(0);
      expect(await broker.messageCount(retryQueueName(app.queueOf(shorter), 60))).toBe(0);
      expect(app.metrics.snapshot(inherits)).toMatchObject({ retried: 2, deadLettered: 1 });
      expect(app.metrics.snapshot(shorter)).toMatchObject({ retried: 1, deadLettered: 1 });
      expect(app.metrics.snapshot(disabled)).toMatchObject({ retried: 0, deadLettered: 1 });
    });
  });
});

describe('two services subscribed to the same event on one exchange (PostgreSQL)', () => {
  let broker: Broker;
  let failingService: TestApp;
  let healthyService: TestApp;
  const consumer = unique('Mirror.onChanged');
  const exchange = unique('ex');
  // Each service has its own database in real life; a schema stands for service A's here, so the
  // two services' dedupe rows (same consumer name) cannot meet.
  const schema = `edge_${unique('a').replace(/-/g, '_')}`;
  const order: string[] = [];
  const events = 10;
  let failingDeadLetteredWhenHealthyDone = -1;
  let failingRunsWhenHealthyDone = -1;
  let healthyRuns = 0;

  @Injectable()
  class FailingMirror {
    @OnEvent('Mirror.Changed', { consumer, retry: { attempts: 3, delays: [500] } })
    async onChanged(_data: unknown, ctx: EventContext) {
      order.push(`A#${ctx.attempt}`);
      throw new Error('service A cannot apply the change');
    }
  }

  @Injectable()
  class HealthyMirror {
    @OnEvent('Mirror.Changed', { consumer })
    async onChanged(_data: unknown, ctx: EventContext) {
      await ctx.manager.insert(EdgeEffect, { consumer, eventId: ctx.eventId, attempt: ctx.attempt, note: 'B' });
      order.push('B');
      healthyRuns += 1;
      if (healthyRuns === events) {
        failingDeadLetteredWhenHealthyDone = failingService.metrics.snapshot(consumer).deadLettered;
        failingRunsWhenHealthyDone = order.filter((entry) => entry.startsWith('A#')).length;
      }
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    healthyService = await startApp({ engine: 'postgres', providers: [HealthyMirror], entities: [EdgeEffect], exchange, service: unique('svcB') });
    await healthyService.dataSource.query(`CREATE SCHEMA ${schema}`);
    const base = typeOrmOptions('postgres', [EdgeEffect]);
    failingService = await startApp({
      engine: 'postgres',
      providers: [FailingMirror],
      exchange,
      service: unique('svcA'),
      typeorm: { options: { ...base.options, schema } as typeof base.options, cleanup: () => undefined },
    });
  });

  afterAll(async () => {
    await healthyService.dataSource.getRepository(EdgeEffect).delete({ consumer });
    await healthyService.dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await failingService.close();
    await healthyService.dataSource.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await healthyService.close();
    await broker.close();
  });

  it('gives each service every event on its own queue; B is done while A still retries', async () => {
    const eventIds = Array.from({ length: events }, () => unique('evt'));
    for (const eventId of eventIds) await broker.publishRaw(exchange, 'Mirror.Changed', envelope(eventId, 'Mirror.Changed'));

    const dead = await broker.takeAll(deadLetterQueueName(`${failingService.service}.${consumer}`), events);
    await waitFor(() => healthyService.metrics.snapshot(consumer).handled >= events, { what: 'B handled every event' });

    expect(failingService.queueOf(consumer)).toBe(`${failingService.service}.${consumer}`);
    expect(healthyService.queueOf(consumer)).toBe(`${healthyService.service}.${consumer}`);
    expect(await broker.messageCount(failingService.queueOf(consumer))).toBe(0);
    expect(await broker.messageCount(healthyService.queueOf(consumer))).toBe(0);
    expect(new Set(dead.map(eventIdOf))).toEqual(new Set(eventIds));
    const effects = await healthyService.dataSource.getRepository(EdgeEffect).findBy({ consumer });
    expect(new Set(effects.map((effect) => effect.eventId))).toEqual(new Set(eventIds));
    expect(effects).toHaveLength(events);
    expect(healthyService.metrics.snapshot(consumer)).toMatchObject({ handled: events, retried: 0, deadLettered: 0 });
    expect(failingService.metrics.snapshot(consumer)).toMatchObject({ handled: 0, retried: 2 * events, deadLettered: events });
    // B finished before A dead-lettered anything, and before A's final attempts.
    expect(failingDeadLetteredWhenHealthyDone).toBe(0);
    expect(failingRunsWhenHealthyDone).toBeLessThan(3 * events);
    expect(order.lastIndexOf('B')).toBeLessThan(order.indexOf('A#3'));
    expect(order.filter((entry) => entry.startsWith('A#'))).toHaveLength(3 * events);
  });
});

describe('prefetch: 1 with concurrency: 1 (PostgreSQL)', () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Slow.onQueued');
  const runs: string[] = [];

  @Injectable()
  class Slow {
    @OnEvent('Slow.Queued', { consumer, concurrency: 1 })
    async onQueued(_data: unknown, ctx: EventContext) {
      runs.push(ctx.eventId);
      await ctx.manager.insert(EdgeEffect, { consumer, eventId: ctx.eventId, attempt: ctx.attempt, note: null });
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'postgres', providers: [Slow], entities: [EdgeEffect], sync: { prefetch: 1 } });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(EdgeEffect).delete({ consumer });
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await app.close();
    await broker.close();
  });

  it('drains 50 events in queue order', async () => {
    const eventIds = Array.from({ length: 50 }, (_, i) => `${consumer}-${String(i).padStart(2, '0')}`);
    for (const eventId of eventIds) await broker.publishRaw(app.exchange, 'Slow.Queued', envelope(eventId, 'Slow.Queued'));

    await waitFor(() => app.metrics.snapshot(consumer).handled >= 50, { what: '50 events handled' });

    expect(runs).toEqual(eventIds);
    expect(await app.dataSource.getRepository(EdgeEffect).countBy({ consumer })).toBe(50);
    expect(await broker.messageCount(app.queueOf(consumer))).toBe(0);
  });
});

describe('prefetch: 1 with concurrency: 3 (PostgreSQL)', () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Wide.onQueued');
  const release = deferred();
  let inFlight = 0;
  let maxInFlight = 0;

  @Injectable()
  class Wide {
    @OnEvent('Wide.Queued', { consumer, concurrency: 3 })
    async onQueued(_data: unknown, ctx: EventContext) {
      inFlight += 1;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        await ctx.manager.insert(EdgeEffect, { consumer, eventId: ctx.eventId, attempt: ctx.attempt, note: null });
        await release.promise;
      } finally {
        inFlight -= 1;
      }
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'postgres', providers: [Wide], entities: [EdgeEffect], sync: { prefetch: 1 } });
  });

  afterAll(async () => {
    release.resolve();
    await app.dataSource.getRepository(EdgeEffect).delete({ consumer });
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await app.close();
    await broker.close();
  });

  it('still runs three at once: a handler gets at least as many deliveries as its concurrency', async () => {
    const eventIds = Array.from({ length: 3 }, (_, i) => `${consumer}-${i}`);
    for (const eventId of eventIds) await broker.publishRaw(app.exchange, 'Wide.Queued', envelope(eventId, 'Wide.Queued'));

    await waitFor(() => inFlight === 3, { what: 'three runs in flight at once' });
    release.resolve();
    await waitFor(() => app.metrics.snapshot(consumer).handled >= 3, { what: 'three events handled' });

    expect(maxInFlight).toBe(3);
    expect(await app.dataSource.getRepository(EdgeEffect).countBy({ consumer, eventId: In(eventIds) })).toBe(3);
    expect(await broker.messageCount(app.queueOf(consumer))).toBe(0);
  });
});

describe('copies of one event raced by two competing consumers (MariaDB)', () => {
  let broker: Broker;
  let first: TestApp;
  let second: TestApp;
  const consumer = unique('Race.onContended');
  const retryDelay = 50;
  const plain = Array.from({ length: 6 }, (_, i) => `${consumer}-plain-${i}`);
  const rolledBack = Array.from({ length: 6 }, (_, i) => `${consumer}-rollback-${i}`);
  const eventIds = [...plain, ...rolledBack];
  const failFirstRun = new Set(rolledBack);
  const failedOnce = new Set<string>();

  @Injectable()
  class Race {
    @OnEvent('Race.Contended', { consumer, concurrency: 4, retry: { attempts: 10, delays: [retryDelay] } })
    async onContended(_data: unknown, ctx: EventContext) {
      await ctx.manager.insert(EdgeEffect, { consumer, eventId: ctx.eventId, attempt: ctx.attempt, note: null });
      await ctx.manager.query('UPDATE test_edge_counters SET n = n + 1 WHERE id = ?', [ctx.eventId]);
      // A rollback while other copies wait on the dedupe row's lock is what makes InnoDB deadlock them.
      if (failFirstRun.has(ctx.eventId) && !failedOnce.has(ctx.eventId)) {
        failedOnce.add(ctx.eventId);
        throw new Error(`first run of ${ctx.eventId} rolls back`);
      }
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    first = await startApp({ engine: 'mariadb', providers: [Race], entities: [EdgeEffect, EdgeCounter], keepTopology: true });
    second = await startApp({
      engine: 'mariadb',
      providers: [Race],
      entities: [EdgeEffect, EdgeCounter],
      keepTopology: true,
      service: first.service,
      exchange: first.exchange,
    });
  });

  afterAll(async () => {
    await first.dataSource.getRepository(EdgeEffect).delete({ consumer });
    await first.dataSource.getRepository(EdgeCounter).delete({ id: In(eventIds) });
    await first.dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await Promise.all([first.close(), second.close()]);
    const queue = first.queueOf(consumer);
    await broker.deleteQueues(queue, deadLetterQueueName(queue), retryQueueName(queue, retryDelay));
    await broker.deleteExchange(first.exchange);
    await broker.close();
  });

  it('applies an event once when five copies reach both consumers at once, even when the first run rolls back', async () => {
    await first.dataSource.getRepository(EdgeCounter).insert(eventIds.map((id) => ({ id, n: 0 })));
    const counters = () => first.dataSource.getRepository(EdgeCounter).findBy({ id: In(eventIds) });

    for (const eventId of eventIds) {
      const body = envelope(eventId, 'Race.Contended');
      await Promise.all(Array.from({ length: 5 }, () => broker.publishRaw(first.exchange, 'Race.Contended', body)));
    }

    const settled = (app: TestApp) => app.metrics.snapshot(consumer).handled + app.metrics.snapshot(consumer).duplicates + app.metrics.snapshot(consumer).deadLettered;
    await waitFor(() => settled(first) + settled(second) >= 5 * eventIds.length, { timeoutMs: 20_000, what: 'every copy settled' });

    const total = (counter: 'handled' | 'duplicates' | 'retried' | 'deadLettered') => first.metrics.snapshot(consumer)[counter] + second.metrics.snapshot(consumer)[counter];
    if (process.env.SYNC_TEST_LOGS) {
      console.info('MariaDB race metrics', { first: first.metrics.snapshot(consumer), second: second.metrics.snapshot(consumer) });
    }
    expect(Object.fromEntries((await counters()).map((counter) => [counter.id, counter.n]))).toEqual(Object.fromEntries(eventIds.map((id) => [id, 1])));
    const effects = await first.dataSource.getRepository(EdgeEffect).findBy({ consumer });
    expect(effects.map((effect) => effect.eventId).sort()).toEqual([...eventIds].sort());
    expect(await first.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(eventIds.length);
    expect(total('handled')).toBe(eventIds.length);
    expect(total('duplicates')).toBe(4 * eventIds.length);
    expect(total('deadLettered')).toBe(0);
    // The deliberate rollbacks retry once each; anything above is a lock conflict surfacing as a retry.
    expect(total('retried')).toBeGreaterThanOrEqual(rolledBack.length);
    expect(failedOnce).toEqual(new Set(rolledBack));
  });
});
