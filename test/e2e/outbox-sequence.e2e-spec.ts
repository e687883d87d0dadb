import { Injectable } from '@nestjs/common';
import { type EventContext, OnEvent, SyncKeyOffset, SyncPublisher } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { ENGINES } from '../support/databases.js';
import { unique, waitFor } from '../support/wait.js';

/**
 * Events written to the outbox with a key and no sequence get the key's next sequence in the
 * outbox transaction: per (service, key), from 1, without holes from rolled-back transactions,
 * and in commit order when transactions race on one key.
 */
describe.each(ENGINES)('outbox-assigned sequences on %s', (engine) => {
  const consumer = unique('Seq.onChanged');
  const received: Array<{ key?: string; sequence?: number; eventId: string }> = [];
  let app: TestApp;

  @Injectable()
  class Recorder {
    @OnEvent('Seq.Changed', { consumer, ordering: 'key' })
    async onChanged(_data: unknown, ctx: EventContext) {
      received.push({ key: ctx.key, sequence: ctx.sequence, eventId: ctx.eventId });
    }
  }

  beforeAll(async () => {
    app = await startApp({ engine, providers: [Recorder], sync: { outbox: { pollInterval: '100ms' } } });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(SyncKeyOffset).delete({ consumer: `outbox:${app.service}` });
    await app.dataSource.getRepository(SyncKeyOffset).delete({ consumer });
    await app.close();
  });

  const sequencesOf = (key: string) => received.filter((event) => event.key === key).map((event) => event.sequence);

  it('numbers each key from 1 in the outbox transaction, keeps explicit sequences, and skips nothing on rollback', async () => {
    const publisher = app.app.get(SyncPublisher);
    const [a, b, c] = [unique('a'), unique('b'), unique('c')];
    await publisher.transaction(async () => {
      await publisher.publish('Seq.Changed', { n: 1 }, { key: a });
      await publisher.publish('Seq.Changed', { n: 2 }, { key: a });
      await publisher.publish('Seq.Changed', { n: 1 }, { key: b });
      await publisher.publish('Seq.Changed', { n: 1 }, { key: c, sequence: 100 });
    });
    await expect(
      publisher.transaction(async () => {
        await publisher.publish('Seq.Changed', { n: 3 }, { key: a });
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    const third = await publisher.transaction(() => publisher.publish('Seq.Changed', { n: 3 }, { key: a }));
    expect(third.sequence).toBe(3);

    await waitFor(() => app.metrics.snapshot(consumer).handled === 5, { what: 'five events handled' });
    expect(sequencesOf(a)).toEqual([1, 2, 3]);
    expect(sequencesOf(b)).toEqual([1]);
    expect(sequencesOf(c)).toEqual([100]);
    expect(app.metrics.snapshot(consumer)).toMatchObject({ stale: 0, deadLettered: 0 });
    const counter = await app.dataSource.getRepository(SyncKeyOffset).findOneBy({ consumer: `outbox:${app.service}`, key: a });
    expect(counter?.sequence).toBe(3);
  });

  if (engine !== 'sqlite') {
    it('gives racing transactions on one key the numbers in commit order, so none is stale downstream', async () => {
      const publisher = app.app.get(SyncPublisher);
      const key = unique('hot');
      const count = 20;
      const events = await Promise.all(
        Array.from({ length: count }, (_, n) => publisher.transaction(() => publisher.publish('Seq.Changed', { n }, { key }))),
      );
      expect(events.map((event) => event.sequence).sort((x, y) => x! - y!)).toEqual(Array.from({ length: count }, (_, n) => n + 1));
      await waitFor(() => sequencesOf(key).length === count, { what: `${count} events of one key received` });
      // The relay publishes in write order; the numbers were taken in commit order: they arrive in order.
      expect(sequencesOf(key)).toEqual(Array.from({ length: count }, (_, n) => n + 1));
      expect(app.metrics.snapshot(consumer).stale).toBe(0);
    });
  }
});
