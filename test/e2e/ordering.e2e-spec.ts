import { Injectable } from '@nestjs/common';
import { Column, Entity, In, PrimaryColumn, PrimaryGeneratedColumn } from 'typeorm';
import { deadLetterQueueName, type EventContext, OnEvent, PublishesEvent, SYNC_HEADERS, SyncKeyOffset, SyncPublisher } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { ENGINES } from '../support/databases.js';
import { unique, waitFor } from '../support/wait.js';

/** The consumer's copy of each key: the last state applied. */
@Entity('test_ordering_copies')
class Copy {
  @PrimaryColumn({ type: 'varchar', length: 200 }) id!: string;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ type: 'int' }) version!: number;
  @Column({ type: 'varchar', length: 200 }) name!: string;
}

/** Every committed application, in the order the key's row lock let them commit. */
@Entity('test_ordering_log')
class Applied {
  @PrimaryGeneratedColumn() n!: number;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ name: 'user_id', type: 'varchar', length: 200 }) userId!: string;
  @Column({ type: 'int' }) version!: number;
}

interface UserChanged {
  id: string;
  version: number;
  name: string;
}

function envelope(eventId: string, key: string | undefined, sequence: number | undefined, data: UserChanged): string {
  return JSON.stringify({ eventId, eventType: 'UserChanged', data, timestamp: new Date().toISOString(), source: 'users', key, sequence });
}

function handlerFor(consumer: string, seen: Array<{ data: UserChanged; ctx: EventContext }>) {
  @Injectable()
  class Projection {
    @OnEvent('UserChanged', { consumer, ordering: 'key', concurrency: 4 })
    async onUserChanged(data: UserChanged, ctx: EventContext) {
      seen.push({ data, ctx });
      await ctx.manager.save(Copy, { id: data.id, consumer, version: data.version, name: data.name });
      await ctx.manager.insert(Applied, { consumer, userId: data.id, version: data.version });
    }
  }
  return Projection;
}

describe.each(ENGINES)("ordering: 'key' on %s", (engine) => {
  const consumer = unique('Ordered.onUserChanged');
  const seen: Array<{ data: UserChanged; ctx: EventContext }> = [];
  let app: TestApp;
  let broker: Broker;

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine, providers: [handlerFor(consumer, seen)], entities: [Copy, Applied] });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(Copy).delete({ consumer });
    await app.dataSource.getRepository(Applied).delete({ consumer });
    await app.dataSource.getRepository(SyncKeyOffset).delete({ consumer });
    await app.close();
    await broker.close();
  });

  const send = (key: string | undefined, sequence: number | undefined, name: string) =>
    broker.publishRaw(app.exchange, 'UserChanged', envelope(unique('evt'), key, sequence, { id: key ?? 'none', version: sequence ?? 0, name }));

  it('applies v3, skips a late v2 as stale, and flags the gap before v5', async () => {
    const key = unique('user');
    await send(key, 3, 'three');
    // `handled` counts commits (the in-memory `seen` fills when a run starts).
    await waitFor(() => app.metrics.snapshot(consumer).handled === 1, { what: 'v3 applied' });
    await send(key, 2, 'two');
    await waitFor(() => app.metrics.snapshot(consumer).stale === 1, { what: 'v2 counted stale' });
    await send(key, 3, 'three again, another event id');
    await waitFor(() => app.metrics.snapshot(consumer).stale === 2, { what: 'a second v3 counted stale' });
    await send(key, 5, 'five');
    await waitFor(() => app.metrics.snapshot(consumer).handled === 2, { what: 'v5 applied' });

    const runs = seen.filter(({ data }) => data.id === key);
    expect(runs.map(({ data }) => data.version)).toEqual([3, 5]);
    expect(runs.map(({ ctx }) => [ctx.gap, ctx.previousSequence])).toEqual([
      [false, undefined],
      [true, 3],
    ]);
    expect(await app.dataSource.getRepository(Copy).findOneByOrFail({ id: key })).toMatchObject({ version: 5, name: 'five' });
    expect(await app.dataSource.getRepository(SyncKeyOffset).findOneByOrFail({ consumer, key })).toMatchObject({ sequence: 5 });
    expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 2, stale: 2, deadLettered: 0 });
  });

  it('dead-letters an event without a key or a sequence, naming what is missing', async () => {
    await send(unique('user'), undefined, 'no sequence');
    await send(undefined, 7, 'no key');
    const dead = await broker.takeAll(deadLetterQueueName(app.queueOf(consumer)), 2);
    expect(dead.map((message) => message.properties.headers?.[SYNC_HEADERS.reason])).toEqual(['unordered', 'unordered']);
    expect(dead.map((message) => String(message.properties.headers?.[SYNC_HEADERS.errorMessage])).sort()).toEqual([
      expect.stringMatching(/no key/),
      expect.stringMatching(/no sequence/),
    ]);
  });
});

describe("ordering: 'key' with @PublishesEvent({ sequence }) and two competing consumers (PostgreSQL)", () => {
  const consumer = unique('Race.onUserChanged');
  const seen: Array<{ data: UserChanged; ctx: EventContext }> = [];
  let publisherApp: TestApp;
  let first: TestApp;
  let second: TestApp;

  @Injectable()
  class Users {
    @PublishesEvent('UserChanged', { key: (user: UserChanged) => user.id, sequence: (user: UserChanged) => user.version })
    async change(id: string, version: number): Promise<UserChanged> {
      return { id, version, name: `${id} v${version}` };
    }
  }

  beforeAll(async () => {
    const Projection = handlerFor(consumer, seen);
    // The first instance closes last and deletes the queues both consumed.
    first = await startApp({ engine: 'postgres', providers: [Projection], entities: [Copy, Applied] });
    second = await startApp({ engine: 'postgres', providers: [Projection], entities: [Copy, Applied], service: first.service, exchange: first.exchange, keepTopology: true });
    publisherApp = await startApp({ engine: 'postgres', providers: [Users], exchange: first.exchange });
  });

  afterAll(async () => {
    await first.dataSource.getRepository(Copy).delete({ consumer });
    await first.dataSource.getRepository(Applied).delete({ consumer });
    await first.dataSource.getRepository(SyncKeyOffset).delete({ consumer });
    await publisherApp.close();
    await second.close();
    await first.close();
  });

  it('2,000 updates over 100 keys with redeliveries and stale re-sends: each key applied in increasing order, ending at the last state', async () => {
    const users = publisherApp.app.get(Users);
    const keys = Array.from({ length: 100 }, (_, i) => `${unique('u')}-${i}`);
    const broker = await Broker.connect();
    try {
      // Twenty versions per key, keys interleaved; every 7th update is followed by a redelivery of
      // the same event and a re-send of an older version under a new id.
      let step = 0;
      const pending: Promise<unknown>[] = [];
      for (let version = 1; version <= 20; version++) {
        for (const key of keys) {
          step += 1;
          const publish = users.change(key, version);
          pending.push(publish);
          if (step % 7 === 0) {
            const sent = await publisherApp.app.get(SyncPublisher).publish('UserChanged', { id: key, version, name: `${key} v${version}` }, { key, sequence: version });
            pending.push(broker.publishRaw(first.exchange, 'UserChanged', JSON.stringify(sent)));
            if (version > 1) pending.push(broker.publishRaw(first.exchange, 'UserChanged', envelope(unique('evt'), key, version - 1, { id: key, version: version - 1, name: 'stale' })));
          }
        }
        await Promise.all(pending.splice(0));
      }
      const finished = async () => (await first.dataSource.getRepository(Copy).countBy({ consumer, version: 20, id: In(keys) })) === keys.length;
      await waitFor(finished, { timeoutMs: 90_000, what: 'every key at version 20' });

      const log = await first.dataSource.getRepository(Applied).find({ where: { consumer, userId: In(keys) }, order: { n: 'ASC' } });
      const byKey = new Map<string, number[]>();
      for (const entry of log) byKey.set(entry.userId, [...(byKey.get(entry.userId) ?? []), entry.version]);
      for (const key of keys) {
        const versions = byKey.get(key)!;
        expect(versions.every((version, i) => i === 0 || version > versions[i - 1])).toBe(true);
        expect(versions.at(-1)).toBe(20);
      }
      const copies = await first.dataSource.getRepository(Copy).findBy({ consumer, id: In(keys) });
      expect(copies.every((copy) => copy.version === 20 && copy.name === `${copy.id} v20`)).toBe(true);
      const counts = [first, second].map((app) => app.metrics.snapshot(consumer));
      // Both instances did work, and the re-sends were absorbed: as duplicates or as stale events.
      expect(counts.every((count) => count.handled > 0)).toBe(true);
      expect(counts.reduce((sum, count) => sum + count.stale + count.duplicates, 0)).toBeGreaterThan(0);
      expect(counts.reduce((sum, count) => sum + count.deadLettered, 0)).toBe(0);
    } finally {
      await broker.close();
    }
  });
});
