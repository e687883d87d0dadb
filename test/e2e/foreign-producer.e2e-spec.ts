import { Injectable } from '@nestjs/common';
import { Column, Entity, In, PrimaryColumn } from 'typeorm';
import { EventContext, OnEvent, SyncProcessedEvent } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { unique, waitFor } from '../support/wait.js';

@Entity('test_customers')
class Customer {
  @PrimaryColumn({ type: 'varchar', length: 100 }) id!: string;
  @Column({ type: 'varchar', length: 200 }) name!: string;
}

const SEED = '{"eventType":"UserCreated","data":{"userId":"123","name":"Alice"},"timestamp":"2024-06-01T12:00:00Z"}';

describe('a plain foreign producer (PostgreSQL)', () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Projection.onUserCreated');
  const flaky = unique('Projection.onUserImported');
  const runs: EventContext[] = [];
  const flakyRuns: EventContext[] = [];

  @Injectable()
  class Projection {
    @OnEvent('UserCreated', { consumer })
    async onUserCreated(user: { userId: string; name: string }, ctx: EventContext) {
      runs.push(ctx);
      await ctx.manager.save(Customer, { id: `${consumer}:${user.userId}`, name: user.name });
    }

    @OnEvent('UserImported', { consumer: flaky, retry: { attempts: 2, delays: [50] } })
    async onUserImported(_user: unknown, ctx: EventContext) {
      flakyRuns.push(ctx);
      if (ctx.attempt === 1) throw new Error('import source not ready');
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'postgres', providers: [Projection], entities: [Customer] });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer: In([consumer, flaky]) });
    await app.dataSource.getRepository(Customer).delete({ id: `${consumer}:123` });
    await app.close();
    await broker.close();
  });

  it('handles the seed message without messageId once, keyed by a content hash', async () => {
    await broker.publishRaw(app.exchange, 'UserCreated', SEED);
    await broker.publishRaw(app.exchange, 'UserCreated', SEED);
    await waitFor(() => app.metrics.snapshot(consumer).handled + app.metrics.snapshot(consumer).duplicates >= 2, { what: 'two deliveries settled' });
    expect(runs).toHaveLength(1);
    expect(runs[0].eventId).toMatch(/^sha256:/);
    expect(runs[0]).toMatchObject({ eventType: 'UserCreated', timestamp: '2024-06-01T12:00:00Z', attempt: 1 });
    expect(await app.dataSource.getRepository(Customer).findOneBy({ id: `${consumer}:123` })).toMatchObject({ name: 'Alice' });
    expect(app.metrics.snapshot(consumer).duplicates).toBe(1);
  });

  it('takes the id from the AMQP messageId when there is one', async () => {
    const messageId = unique('msg');
    await broker.publishRaw(app.exchange, 'UserCreated', SEED, { messageId });
    await waitFor(() => runs.find((ctx) => ctx.eventId === messageId), { what: 'the messageId event' });
    // The run has started; its dedupe row commits with it.
    await waitFor(async () => (await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer, eventId: messageId })) === 1, { what: 'the dedupe row under the messageId' });
  });

  it('keeps the messageId as the event id on a retry', async () => {
    const messageId = unique('msg');
    await broker.publishRaw(app.exchange, 'UserImported', SEED.replace('UserCreated', 'UserImported'), { messageId });
    await waitFor(() => app.metrics.snapshot(flaky).handled >= 1, { what: 'the retried messageId event' });
    expect(flakyRuns.map((ctx) => `${ctx.eventId}#${ctx.attempt}`)).toEqual([`${messageId}#1`, `${messageId}#2`]);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).findBy({ consumer: flaky })).toEqual([expect.objectContaining({ eventId: messageId })]);
  });
});
