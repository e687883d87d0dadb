import { Injectable } from '@nestjs/common';
import type { GetMessage } from 'amqplib';
import { Column, Entity, In, PrimaryGeneratedColumn } from 'typeorm';
import { deadLetterQueueName, EventContext, NonRetryableError, OnEvent, retryQueueName, SYNC_HEADERS, SyncProcessedEvent } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import type { Engine } from '../support/databases.js';
import { unique, waitFor } from '../support/wait.js';

@Entity('test_retry_effects')
class RetryEffect {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ name: 'event_id', type: 'varchar', length: 200 }) eventId!: string;
  @Column({ type: 'int' }) attempt!: number;
}

class InventoryUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InventoryUnavailableError';
  }
}

/** Deliberately not how JSON.stringify would write it, so a re-serialised copy cannot pass for the original bytes. */
function handWrittenBody(eventId: string, eventType: string): Buffer {
  return Buffer.from(`{ "source": "foreign",\n  "eventType": "${eventType}", "eventId": "${eventId}",\n  "data": { "sku": "ü-42", "qty": 3.50 }, "timestamp": "2024-06-01T12:00:00.000Z" }\n`, 'utf8');
}

function envelope(eventId: string, eventType: string): string {
  return JSON.stringify({ eventId, eventType, data: { eventId }, timestamp: new Date().toISOString(), source: 'foreign' });
}

function isIsoDate(value: unknown): boolean {
  return typeof value === 'string' && !Number.isNaN(Date.parse(value)) && new Date(value).toISOString() === value;
}

function headersOf(message: GetMessage): Record<string, unknown> {
  return message.properties.headers ?? {};
}

describe.each<Engine>(['postgres', 'sqlite'])('an always-failing handler on %s', (engine) => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Stock.onReserved');
  const runs: EventContext[] = [];
  const startedAt: number[] = [];

  @Injectable()
  class Stock {
    @OnEvent('Stock.Reserved', { consumer, retry: { attempts: 4, delays: [50, 100, 150] } })
    async onReserved(_data: unknown, ctx: EventContext) {
      runs.push(ctx);
      startedAt.push(Date.now());
      await ctx.manager.insert(RetryEffect, { consumer, eventId: ctx.eventId, attempt: ctx.attempt });
      throw new InventoryUnavailableError(`no stock for ${ctx.eventId}`);
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine, providers: [Stock], entities: [RetryEffect] });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(RetryEffect).delete({ consumer });
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await app.close();
    await broker.close();
  });

  it('runs it exactly `attempts` times, then dead-letters the original bytes with the failure headers', async () => {
    const eventId = unique('evt');
    const body = handWrittenBody(eventId, 'Stock.Reserved');
    const queue = app.queueOf(consumer);
    await broker.publishRaw(app.exchange, 'Stock.Reserved', body);

    const [dead, ...more] = await broker.takeAll(deadLetterQueueName(queue), 1);

    expect(more).toHaveLength(0);
    expect(runs.map((ctx) => [ctx.eventId, ctx.attempt])).toEqual([
      [eventId, 1],
      [eventId, 2],
      [eventId, 3],
      [eventId, 4],
    ]);
    expect(dead.content.equals(body)).toBe(true);
    const headers = headersOf(dead);
    expect(headers).toMatchObject({
      [SYNC_HEADERS.reason]: 'exhausted',
      [SYNC_HEADERS.errorName]: 'InventoryUnavailableError',
      [SYNC_HEADERS.errorMessage]: `no stock for ${eventId}`,
      [SYNC_HEADERS.consumer]: consumer,
      [SYNC_HEADERS.originalExchange]: app.exchange,
      [SYNC_HEADERS.originalRoutingKey]: 'Stock.Reserved',
    });
    expect(headers[SYNC_HEADERS.attempts]).toBe(4);
    expect(typeof headers[SYNC_HEADERS.errorStack]).toBe('string');
    expect(headers[SYNC_HEADERS.errorStack]).toContain('InventoryUnavailableError');
    expect(isIsoDate(headers[SYNC_HEADERS.firstFailureAt])).toBe(true);
    expect(isIsoDate(headers[SYNC_HEADERS.lastFailureAt])).toBe(true);
    expect(Date.parse(headers[SYNC_HEADERS.lastFailureAt] as string)).toBeGreaterThan(Date.parse(headers[SYNC_HEADERS.firstFailureAt] as string));
    // The first failure is the one of the first run, carried across every retry hop.
    expect(Date.parse(headers[SYNC_HEADERS.firstFailureAt] as string)).toBeLessThanOrEqual(startedAt[1]);
    // The broker's own bookkeeping of the retry hops is not re-published.
    expect(Object.keys(headers).filter((name) => name.startsWith('x-'))).toEqual([]);
    expect(dead.properties.deliveryMode).toBe(2);
    // Retry n waits in the tier of the n-th delay: the broker names that tier when it dead-letters the copy back.
    const tierOf = (ctx: EventContext) => (ctx.headers['x-death'] as Array<{ queue: string }> | undefined)?.[0]?.queue;
    expect(runs.slice(1).map(tierOf)).toEqual([50, 100, 150].map((delay) => retryQueueName(queue, delay)));

    for (const delay of [50, 100, 150]) expect(await broker.messageCount(retryQueueName(queue, delay))).toBe(0);
    expect(await broker.messageCount(queue)).toBe(0);
    expect(await app.dataSource.getRepository(RetryEffect).countBy({ consumer, eventId })).toBe(0);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer, eventId })).toBe(0);
    expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 0, retried: 3, deadLettered: 1 });
  });
});

describe('retries and dead letters on postgres', () => {
  let app: TestApp;
  let broker: Broker;
  const refused = unique('Orders.onRefused');
  const strict = unique('Orders.onStrict');
  const waiting = unique('Orders.onWaiting');
  const failsOnce = unique('Shipping.onPlaced');
  const succeeds = unique('Invoicing.onPlaced');
  const consumers = [refused, strict, waiting, failsOnce, succeeds];
  const runs = new Map<string, EventContext[]>(consumers.map((consumer) => [consumer, []]));
  const failFirstAttemptOf = new Set<string>();

  const record = async (consumer: string, ctx: EventContext) => {
    runs.get(consumer)!.push(ctx);
    await ctx.manager.insert(RetryEffect, { consumer, eventId: ctx.eventId, attempt: ctx.attempt });
  };
  const ran = (consumer: string) => runs.get(consumer)!.map((ctx) => `${ctx.eventId}#${ctx.attempt}`);

  @Injectable()
  class Orders {
    @OnEvent('Orders.Refused', { consumer: refused, retry: { attempts: 4, delays: [50] } })
    async onRefused(_data: unknown, ctx: EventContext) {
      await record(refused, ctx);
      throw new NonRetryableError(`order ${ctx.eventId} can never be fulfilled`);
    }

    @OnEvent('Orders.Strict', { consumer: strict, retry: { attempts: 4, delays: [50] } })
    async onStrict(_data: unknown, ctx: EventContext) {
      await record(strict, ctx);
    }

    @OnEvent('Orders.Waiting', { consumer: waiting, retry: { attempts: 2, delays: [2000] } })
    async onWaiting(_data: unknown, ctx: EventContext) {
      await record(waiting, ctx);
      if (ctx.attempt === 1 && failFirstAttemptOf.has(ctx.eventId)) throw new Error(`warehouse not ready for ${ctx.eventId}`);
    }
  }

  @Injectable()
  class Shipping {
    @OnEvent('Orders.Placed', { consumer: failsOnce, retry: { attempts: 3, delays: [50] } })
    async onPlaced(_data: unknown, ctx: EventContext) {
      await record(failsOnce, ctx);
      if (ctx.attempt === 1 && failFirstAttemptOf.has(ctx.eventId)) throw new Error(`carrier busy for ${ctx.eventId}`);
    }
  }

  @Injectable()
  class Invoicing {
    @OnEvent('Orders.Placed', { consumer: succeeds, retry: { attempts: 3, delays: [50] } })
    async onPlaced(_data: unknown, ctx: EventContext) {
      await record(succeeds, ctx);
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'postgres', providers: [Orders, Shipping, Invoicing], entities: [RetryEffect] });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(RetryEffect).delete({ consumer: In(consumers) });
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer: In(consumers) });
    await app.close();
    await broker.close();
  });

  it('dead-letters a NonRetryableError after its first run', async () => {
    const eventId = unique('evt');
    const body = envelope(eventId, 'Orders.Refused');
    await broker.publishRaw(app.exchange, 'Orders.Refused', body);

    const [dead, ...more] = await broker.takeAll(deadLetterQueueName(app.queueOf(refused)), 1);

    expect(more).toHaveLength(0);
    expect(ran(refused)).toEqual([`${eventId}#1`]);
    expect(dead.content.toString('utf8')).toBe(body);
    expect(headersOf(dead)).toMatchObject({
      [SYNC_HEADERS.reason]: 'non-retryable',
      [SYNC_HEADERS.errorName]: 'NonRetryableError',
      [SYNC_HEADERS.errorMessage]: `order ${eventId} can never be fulfilled`,
      [SYNC_HEADERS.consumer]: refused,
      [SYNC_HEADERS.attempts]: 1,
    });
    expect(await broker.messageCount(retryQueueName(app.queueOf(refused), 50))).toBe(0);
    expect(await app.dataSource.getRepository(RetryEffect).countBy({ consumer: refused, eventId })).toBe(0);
    expect(app.metrics.snapshot(refused)).toMatchObject({ handled: 0, retried: 0, deadLettered: 1 });
  });

  it('dead-letters malformed bytes without running the handler and keeps consuming', async () => {
    const poison = [Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x3a, 0x20, 0x6e, 0x6f]), Buffer.from('[{"eventType":"Orders.Strict"}]'), Buffer.from('{}')];
    for (const body of poison) await broker.publishRaw(app.exchange, 'Orders.Strict', body);
    const goodId = unique('evt');
    await broker.publishRaw(app.exchange, 'Orders.Strict', envelope(goodId, 'Orders.Strict'));

    await waitFor(() => app.metrics.snapshot(strict).handled >= 1, { what: 'the good event after the poison handled' });
    const dead = await broker.takeAll(deadLetterQueueName(app.queueOf(strict)), 3);

    expect(ran(strict)).toEqual([`${goodId}#1`]);
    expect(dead.map((message) => message.content.toString('hex')).sort()).toEqual(poison.map((body) => body.toString('hex')).sort());
    for (const message of dead) {
      expect(headersOf(message)).toMatchObject({
        [SYNC_HEADERS.reason]: 'malformed',
        [SYNC_HEADERS.consumer]: strict,
        [SYNC_HEADERS.originalExchange]: app.exchange,
        [SYNC_HEADERS.originalRoutingKey]: 'Orders.Strict',
      });
    }
    expect(await app.dataSource.getRepository(RetryEffect).countBy({ consumer: strict, eventId: goodId })).toBe(1);
    expect(app.metrics.snapshot(strict)).toMatchObject({ handled: 1, malformed: 3, deadLettered: 3, retried: 0 });
  });

  it('handles later events while a retry waits in its tier', async () => {
    const [a, b, c] = ['A', 'B', 'C'].map((name) => unique(`evt-${name}`));
    failFirstAttemptOf.add(a);
    await broker.publishRaw(app.exchange, 'Orders.Waiting', envelope(a, 'Orders.Waiting'));
    await waitFor(() => app.metrics.snapshot(waiting).retried >= 1, { what: 'A sent to its retry tier' });
    await broker.publishRaw(app.exchange, 'Orders.Waiting', envelope(b, 'Orders.Waiting'));
    await broker.publishRaw(app.exchange, 'Orders.Waiting', envelope(c, 'Orders.Waiting'));

    await waitFor(() => app.metrics.snapshot(waiting).handled >= 3, { what: 'A, B and C handled' });

    expect(ran(waiting)).toEqual([`${a}#1`, `${b}#1`, `${c}#1`, `${a}#2`]);
    const effects = await app.dataSource.getRepository(RetryEffect).findBy({ consumer: waiting, eventId: In([a, b, c]) });
    expect(effects.map((effect) => `${effect.eventId}#${effect.attempt}`).sort()).toEqual([`${a}#2`, `${b}#1`, `${c}#1`].sort());
    expect(app.metrics.snapshot(waiting)).toMatchObject({ handled: 3, retried: 1, deadLettered: 0 });
  });

  it('retries only the handler that failed, not the others subscribed to the event', async () => {
    const eventId = unique('evt');
    failFirstAttemptOf.add(eventId);
    await broker.publishRaw(app.exchange, 'Orders.Placed', envelope(eventId, 'Orders.Placed'));
    await waitFor(() => app.metrics.snapshot(failsOnce).handled >= 1, { what: 'the failing handler succeeding on its retry' });

    // The succeeding handler's queue is served in order: once a later event is through, a
    // stray retry copy routed to it would have been delivered too.
    const sentinel = unique('evt');
    await broker.publishRaw(app.exchange, 'Orders.Placed', envelope(sentinel, 'Orders.Placed'));
    // Wait for the commits (the metrics), not the handler runs, which come before them.
    await waitFor(() => app.metrics.snapshot(succeeds).handled >= 2 && app.metrics.snapshot(failsOnce).handled >= 2, { what: 'the sentinel handled by both' });

    expect(ran(failsOnce)).toEqual([`${eventId}#1`, `${eventId}#2`, `${sentinel}#1`]);
    expect(ran(succeeds)).toEqual([`${eventId}#1`, `${sentinel}#1`]);
    expect(app.metrics.snapshot(succeeds)).toMatchObject({ handled: 2, duplicates: 0, retried: 0, deadLettered: 0 });
    expect(app.metrics.snapshot(failsOnce)).toMatchObject({ handled: 2, duplicates: 0, retried: 1, deadLettered: 0 });
    expect(await app.dataSource.getRepository(RetryEffect).countBy({ consumer: succeeds, eventId })).toBe(1);
    expect(await app.dataSource.getRepository(RetryEffect).countBy({ consumer: failsOnce, eventId })).toBe(1);
  });
});
