import { Injectable } from '@nestjs/common';
import type { GetMessage } from 'amqplib';
import { In } from 'typeorm';
import { EventContext, OnEvent, PublishesEvent, PublishRejectedError, SyncProcessedEvent, SyncPublisher } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { unique, waitFor } from '../support/wait.js';

interface User {
  id: number;
  name: string;
}

describe('@PublishesEvent and SyncPublisher (PostgreSQL consumers)', () => {
  let app: TestApp;
  let broker: Broker;
  let users: UsersService;
  const rawQueue = unique('raw');
  const createdConsumer = unique('Projection.onUserCreated');
  const renamedConsumer = unique('Projection.onUserRenamed');
  const touchedConsumer = unique('Projection.onUserTouched');
  const auditConsumer = unique('Audit.onOrderPlaced');
  const ledgerConsumer = unique('Ledger.onOrderPlaced');
  const consumers = [createdConsumer, renamedConsumer, touchedConsumer, auditConsumer, ledgerConsumer];
  const runs: Record<string, Array<{ data: unknown; ctx: EventContext }>> = Object.fromEntries(consumers.map((consumer) => [consumer, []]));
  const record = (consumer: string) => (data: unknown, ctx: EventContext) => void runs[consumer].push({ data, ctx });
  const runOf = (consumer: string, eventId: string) =>
    waitFor(() => runs[consumer].find((run) => run.ctx.eventId === eventId), { what: `${consumer} to handle ${eventId}` });

  @Injectable()
  class UsersService {
    @PublishesEvent('UserCreated', { key: (user: User) => user.id })
    async create(name: string): Promise<User> {
      return { id: 41 + name.length, name };
    }

    @PublishesEvent('UserRenamed', { map: (user: User, [, previous]: [number, string]) => ({ userId: user.id, from: previous, to: user.name }) })
    async rename(id: number, _previous: string, name: string): Promise<User> {
      return { id, name };
    }

    @PublishesEvent('UserTouched')
    touch(id: number): { id: number; touched: true } {
      return { id, touched: true };
    }

    @PublishesEvent('UserRejected')
    async reject(name: string): Promise<User> {
      throw new Error(`${name} is not allowed`);
    }

    @PublishesEvent('UserRejected')
    rejectNow(name: string): User {
      throw new Error(`${name} is not allowed either`);
    }
  }

  @Injectable()
  class Projection {
    @OnEvent('UserCreated', { consumer: createdConsumer, retry: false })
    async onUserCreated(data: unknown, ctx: EventContext) {
      record(createdConsumer)(data, ctx);
    }

    @OnEvent('UserRenamed', { consumer: renamedConsumer, retry: false })
    async onUserRenamed(data: unknown, ctx: EventContext) {
      record(renamedConsumer)(data, ctx);
    }

    @OnEvent('UserTouched', { consumer: touchedConsumer, retry: false })
    async onUserTouched(data: unknown, ctx: EventContext) {
      record(touchedConsumer)(data, ctx);
    }
  }

  @Injectable()
  class Audit {
    @OnEvent('OrderPlaced', { consumer: auditConsumer, retry: false })
    async onOrderPlaced(data: unknown, ctx: EventContext) {
      record(auditConsumer)(data, ctx);
    }
  }

  @Injectable()
  class Ledger {
    @OnEvent('OrderPlaced', { consumer: ledgerConsumer, retry: false })
    async onOrderPlaced(data: unknown, ctx: EventContext) {
      record(ledgerConsumer)(data, ctx);
    }
  }

  /** A plain queue on the exchange, to see exactly what went over the wire. */
  async function bindRawQueue(...eventTypes: string[]): Promise<void> {
    for (const eventType of eventTypes) await broker.channel.bindQueue(rawQueue, app.exchange, eventType);
  }

  async function unbindRawQueue(...eventTypes: string[]): Promise<void> {
    for (const eventType of eventTypes) await broker.channel.unbindQueue(rawQueue, app.exchange, eventType);
  }

  const bodyOf = (message: GetMessage) => JSON.parse(message.content.toString()) as Record<string, unknown>;

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'postgres', providers: [UsersService, Projection, Audit, Ledger] });
    users = app.app.get(UsersService);
    await broker.channel.assertQueue(rawQueue, { durable: false, exclusive: true });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer: In(consumers) });
    await broker.deleteQueues(rawQueue);
    await app.close();
    await broker.close();
  });

  it('publishes an async method result as the event data, keyed, with the full envelope and AMQP properties', async () => {
    await bindRawQueue('UserCreated');
    try {
      const before = Date.now();
      const user = await users.create('alice');
      expect(user).toEqual({ id: 46, name: 'alice' });

      const [message] = await broker.takeAll(rawQueue, 1);
      const body = bodyOf(message);
      expect(body).toEqual({ eventId: expect.any(String), eventType: 'UserCreated', data: user, timestamp: expect.any(String), source: app.service, key: '46' });
      expect(new Date(body.timestamp as string).toISOString()).toBe(body.timestamp);
      expect(Date.parse(body.timestamp as string)).toBeGreaterThanOrEqual(before - 1000);

      const { properties } = message;
      expect(properties).toMatchObject({ messageId: body.eventId, type: 'UserCreated', appId: app.service, contentType: 'application/json', deliveryMode: 2 });
      expect(typeof properties.timestamp).toBe('number');
      expect(properties.timestamp).toBe(Math.floor(Date.parse(body.timestamp as string) / 1000));

      const run = await runOf(createdConsumer, body.eventId as string);
      expect(run.data).toEqual(user);
      expect(run.ctx).toMatchObject({ key: '46', source: app.service, eventType: 'UserCreated' });
      expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: createdConsumer, eventId: body.eventId as string })).toBe(1);
    } finally {
      await unbindRawQueue('UserCreated');
    }
  });

  it('publishes map(result, args) as the data, while the caller still gets the result', async () => {
    const countBefore = runs[renamedConsumer].length;
    const user = await users.rename(7, 'bob', 'robert');
    expect(user).toEqual({ id: 7, name: 'robert' });

    await waitFor(() => runs[renamedConsumer].length > countBefore, { what: 'the renamed event' });
    expect(runs[renamedConsumer].slice(countBefore).map((run) => run.data)).toEqual([{ userId: 7, from: 'bob', to: 'robert' }]);
  });

  it('returns a sync method value synchronously and still publishes it', async () => {
    const result = users.touch(9);
    expect(result).not.toBeInstanceOf(Promise);
    expect(result).toEqual({ id: 9, touched: true });

    const run = await waitFor(() => runs[touchedConsumer].find((candidate) => (candidate.data as { id: number }).id === 9), { what: 'the touched event' });
    expect(run.data).toEqual({ id: 9, touched: true });
    expect(run.ctx.source).toBe(app.service);
  });

  it('publishes nothing when the decorated method throws, async or sync', async () => {
    await bindRawQueue('UserRejected', 'Marker');
    try {
      await expect(users.reject('eve')).rejects.toThrow('eve is not allowed');
      expect(() => users.rejectNow('mallory')).toThrow('mallory is not allowed either');

      // Events on one channel reach a queue in publish order: anything published before the marker arrives first.
      const marker = await app.app.get(SyncPublisher).publish('Marker', { after: 'rejections' });
      const taken = await broker.takeAll(rawQueue, 1);
      expect(taken.map((message) => bodyOf(message).eventType)).toEqual(['Marker']);
      expect(bodyOf(taken[0]).eventId).toBe(marker.eventId);
      expect(await broker.messageCount(rawQueue)).toBe(0);
    } finally {
      await unbindRawQueue('UserRejected', 'Marker');
    }
  });

  it('delivers every event to each of two handler classes of the same event type', async () => {
    const publisher = app.app.get(SyncPublisher);
    const sent: string[] = [];
    for (let n = 1; n <= 3; n++) sent.push((await publisher.publish('OrderPlaced', { orderId: n })).eventId);

    for (const consumer of [auditConsumer, ledgerConsumer]) {
      // `handled` counts commits; the in-memory runs fill when a run starts.
      await waitFor(() => app.metrics.snapshot(consumer).handled === 3, { what: `${consumer} to commit all three orders` });
      expect(runs[consumer].map((run) => run.ctx.eventId).sort()).toEqual([...sent].sort());
      expect(runs[consumer].map((run) => run.data)).toEqual(expect.arrayContaining([{ orderId: 1 }, { orderId: 2 }, { orderId: 3 }]));
      expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 3, duplicates: 0 });
    }
  });
});

describe('publishing an event no queue is bound to', () => {
  let app: TestApp;

  beforeAll(async () => {
    app = await startApp({ engine: 'postgres', providers: [] });
  });

  afterAll(async () => {
    await app.close();
  });

  it('still resolves once confirmed, and counts the event as unroutable', async () => {
    const envelope = await app.app.get(SyncPublisher).publish('NobodyListens', { id: 1 });
    expect(envelope).toMatchObject({ eventType: 'NobodyListens', data: { id: 1 }, source: app.service });
    expect(app.metrics.snapshot().published).toBe(1);
    await waitFor(() => app.metrics.snapshot().unroutable === 1, { what: 'the unroutable count' });
    expect(app.metrics.snapshot()).toMatchObject({ published: 1, unroutable: 1, publishFailed: 0 });
  });
});

describe('an event the broker refuses (no handlers)', () => {
  let app: TestApp;
  let broker: Broker;
  const fullQueue = unique('full');

  @Injectable()
  class Refusing {
    @PublishesEvent('Refused')
    async refuse(id: number): Promise<{ id: number }> {
      return { id };
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'postgres', providers: [Refusing] });
    // A bound queue that is always full and rejects publishes makes RabbitMQ nack every Refused event.
    await broker.channel.assertExchange(app.exchange, 'topic', { durable: true });
    await broker.channel.assertQueue(fullQueue, { durable: false, arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' } });
    await broker.channel.bindQueue(fullQueue, app.exchange, 'Refused');
  });

  afterAll(async () => {
    await broker.deleteQueues(fullQueue);
    await app.close();
    await broker.close();
  });

  it('rejects SyncPublisher.publish and the decorated method with PublishRejectedError, counting a failure and no publish', async () => {
    const refused = app.app.get(SyncPublisher).publish('Refused', { id: 1 });
    await expect(refused).rejects.toBeInstanceOf(PublishRejectedError);
    await expect(refused).rejects.toMatchObject({ eventType: 'Refused' });
    await expect(app.app.get(Refusing).refuse(2)).rejects.toBeInstanceOf(PublishRejectedError);

    expect(app.metrics.snapshot()).toMatchObject({ published: 0, publishFailed: 2 });
    expect(await broker.messageCount(fullQueue)).toBe(0);
  });
});
