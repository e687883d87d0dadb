import { Injectable } from '@nestjs/common';
import { Column, Entity, PrimaryColumn } from 'typeorm';
import {
  deadLetterQueueName,
  EventContext,
  InvalidEventDataError,
  InvalidSyncOptionsError,
  OnEvent,
  PublishBufferFullError,
  SYNC_HEADERS,
  SyncModule,
  SyncProcessedEvent,
  SyncPublisher,
  SyncServer,
} from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { typeOrmOptions } from '../support/databases.js';
import { unique, waitFor } from '../support/wait.js';

@Entity('test_failure_notes')
class Note {
  @PrimaryColumn({ type: 'varchar', length: 200 }) id!: string;
}

const envelope = (eventId: string, eventType: string, data: unknown = {}) =>
  JSON.stringify({ eventId, eventType, data, timestamp: new Date().toISOString(), source: 'test' });

describe('a handler that swallows a database error (PostgreSQL)', () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Swallow.onNote');
  let handlerFinished = 0;

  @Injectable()
  class Swallow {
    @OnEvent('Note', { consumer, retry: false })
    async onNote(data: { id: string }, ctx: EventContext) {
      await ctx.manager.save(Note, { id: data.id });
      try {
        await ctx.manager.query('SELECT no_such_column FROM test_failure_notes');
      } catch {
        // the habit under test: "ignore the error and carry on"
      }
      handlerFinished += 1;
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'postgres', providers: [Swallow], entities: [Note] });
  });

  afterAll(async () => {
    await app.close();
    await broker.close();
  });

  it('fails the run instead of acking work PostgreSQL silently rolled back', async () => {
    const id = unique('note');
    await broker.publishRaw(app.exchange, 'Note', envelope(id, 'Note', { id }));
    const [letter] = await broker.takeAll(deadLetterQueueName(app.queueOf(consumer)), 1);
    expect(handlerFinished).toBe(1);
    expect(letter.properties.headers?.[SYNC_HEADERS.errorName]).toBe('AbortedTransactionError');
    expect(String(letter.properties.headers?.[SYNC_HEADERS.errorMessage])).toMatch(/savepoint/);
    expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 0, deadLettered: 1 });
    expect(await app.dataSource.getRepository(Note).countBy({ id })).toBe(0);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer, eventId: id })).toBe(0);
  });
});

describe('a handler that stopped subscribing to an event type (SQLite)', () => {
  const service = unique('svc');
  const exchange = unique('ex');
  const consumer = unique('Narrowed.onEvent');
  const typeorm = typeOrmOptions('sqlite', []);
  const seen: string[] = [];
  let broker: Broker;
  let app: TestApp | undefined;

  @Injectable()
  class Wide {
    @OnEvent(['Narrow.A', 'Narrow.B'], { consumer })
    async onEvent(_data: unknown, ctx: EventContext) {
      seen.push(ctx.eventId);
    }
  }

  @Injectable()
  class Narrow {
    @OnEvent('Narrow.B', { consumer })
    async onEvent(_data: unknown, ctx: EventContext) {
      seen.push(ctx.eventId);
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
  });

  afterAll(async () => {
    await app?.close();
    await broker.close();
    typeorm.cleanup();
  });

  it('removes the stale binding and skips the event instead of dead-lettering it', async () => {
    const wide = await startApp({ engine: 'sqlite', typeorm, service, exchange, providers: [Wide], keepTopology: true });
    await wide.close();
    app = await startApp({ engine: 'sqlite', typeorm, service, exchange, providers: [Narrow] });

    await broker.publishRaw(exchange, 'Narrow.A', envelope('a-1', 'Narrow.A'));
    await waitFor(() => app!.metrics.snapshot(consumer).unsubscribed === 1, { what: 'the stale event skipped' });

    // The binding is gone: a second A never reaches the queue, while B still does.
    await broker.publishRaw(exchange, 'Narrow.A', envelope('a-2', 'Narrow.A'));
    await broker.publishRaw(exchange, 'Narrow.B', envelope('b-1', 'Narrow.B'));
    await waitFor(() => seen.includes('b-1'), { what: 'the subscribed event' });
    expect(seen).toEqual(['b-1']);
    expect(app.metrics.snapshot(consumer)).toMatchObject({ unsubscribed: 1, deadLettered: 0, handled: 1 });
    expect(await broker.messageCount(deadLetterQueueName(app.queueOf(consumer)))).toBe(0);
  });
});

describe('a consumer whose queue is re-declared with other arguments under it (SQLite)', () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Stubborn.onPing');
  const seen: string[] = [];

  @Injectable()
  class Stubborn {
    @OnEvent('Ping', { consumer, retry: false })
    async onPing(_data: unknown, ctx: EventContext) {
      seen.push(ctx.eventId);
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'sqlite', providers: [Stubborn], sync: { reconnectDelay: 300 } });
  });

  afterAll(async () => {
    await app.close();
    await broker.close();
  });

  it('keeps trying to reopen, and consumes again once the conflicting queue is gone', async () => {
    const queue = app.queueOf(consumer);
    const channel = await broker.connection.createChannel();
    channel.on('error', () => undefined);
    await channel.deleteQueue(queue);
    await channel.assertQueue(queue, { durable: true, arguments: { 'x-max-length': 10 } });
    await channel.close();
    const server = app.app.get(SyncServer);
    const status = () => server.consumerStatus().find((entry) => entry.consumer === consumer)!;
    // Its reopen is refused, and tried again, while the conflicting queue stands.
    await waitFor(() => status().state === 'recovering' && /x-max-length/.test(status().lastError ?? ''), { what: 'a refused reopen' });
    await broker.deleteQueues(queue);
    await waitFor(() => status().state === 'consuming', { what: 'the consumer back', timeoutMs: 20_000 });
    await waitFor(
      async () => {
        await broker.publishRaw(app.exchange, 'Ping', envelope('after-conflict', 'Ping'));
        return seen.includes('after-conflict');
      },
      { what: 'consumption after the conflict', intervalMs: 400, timeoutMs: 20_000 },
    );
    expect(new Set(seen)).toEqual(new Set(['after-conflict']));
  });
});

describe('publishing limits (SQLite)', () => {
  let app: TestApp;

  beforeAll(async () => {
    app = await startApp({ engine: 'sqlite', sync: { maxPendingPublishes: 2 } });
  });

  afterAll(async () => {
    await app.close();
  });

  it('refuses data that cannot be JSON without using up a slot', async () => {
    const publisher = app.app.get(SyncPublisher);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await expect(publisher.publish('Bad', { n: 1n })).rejects.toBeInstanceOf(InvalidEventDataError);
    await expect(publisher.publish('Bad', circular)).rejects.toThrow(/cannot be serialised to JSON/);
    await expect(publisher.publish('Good', { ok: true })).resolves.toMatchObject({ eventType: 'Good' });
  });

  it('bounds a burst to maxPendingPublishes and frees the slots afterwards', async () => {
    const publisher = app.app.get(SyncPublisher);
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => publisher.publish('Burst', { i })));
    const refused = results.filter((result) => result.status === 'rejected');
    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(2);
    expect(refused.every((result) => (result as PromiseRejectedResult).reason instanceof PublishBufferFullError)).toBe(true);
    await expect(publisher.publish('Burst', { after: true })).resolves.toMatchObject({ eventType: 'Burst' });
  });
});

describe('retention shorter than a retry chain', () => {
  it('is refused by forRoot for the module policy', () => {
    let error: unknown;
    try {
      SyncModule.forRoot({ service: 's', url: 'amqp://127.0.0.1', retry: { attempts: 3, delays: ['2m'] }, retention: '3m' });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidSyncOptionsError);
    expect((error as InvalidSyncOptionsError).option).toBe('retention');
    expect((error as Error).message).toMatch(/240000 ms/);
  });

  it('is refused at init for a handler whose own policy outlasts it', async () => {
    const consumer = unique('LongRetry.onX');
    @Injectable()
    class LongRetry {
      @OnEvent('X', { consumer, retry: { attempts: 2, delays: ['10m'] } })
      async onX() {}
    }
    await expect(startApp({ engine: 'sqlite', providers: [LongRetry], sync: { retention: '5m', retry: { attempts: 2, delays: ['1s'] } } })).rejects.toThrow(/retention.*LongRetry\.onX/s);
  });
});
