import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { Injectable } from '@nestjs/common';
import { Column, Entity, IsNull, MoreThan, PrimaryColumn } from 'typeorm';
import { type EventContext, OnEvent, SyncOutbox, SyncOutboxMessage, SyncProcessedEvent, SyncPublisher } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { startBroker, stopBroker } from '../support/broker-control.js';
import { type Engine } from '../support/databases.js';
import { deferred } from '../support/deferred.js';
import { POSTGRES_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';

const ROOT = new URL('../../', import.meta.url).pathname;

/** The consumer's copy: one row per event applied, keyed by event id, so a second application fails loudly. */
@Entity('test_outbox_copies')
class Copy {
  @PrimaryColumn({ name: 'event_id', type: 'varchar', length: 200 }) eventId!: string;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ name: 'user_id', type: 'varchar', length: 200 }) userId!: string;
}

/** A billing service that copies every UserCreated it gets, counting committed runs per event. */
function billing(consumer: string) {
  const runs = new Map<string, number>();
  @Injectable()
  class Billing {
    @OnEvent('UserCreated', { consumer, retry: { attempts: 10, delays: ['100ms'] } })
    async onUserCreated(data: { id: string }, ctx: EventContext) {
      await ctx.manager.insert(Copy, { eventId: ctx.eventId, consumer, userId: data.id });
      runs.set(ctx.eventId, (runs.get(ctx.eventId) ?? 0) + 1);
    }
  }
  return { Billing, runs };
}

/** Asserts every event of `userIds` was applied exactly once by `consumer`: one copy, one dedupe row, one run. */
async function expectAppliedOnce(consumerApp: TestApp, consumer: string, runs: Map<string, number>, userIds: string[]): Promise<void> {
  // `runs` fills when a run starts; its commit follows.
  await waitFor(() => consumerApp.metrics.snapshot(consumer).handled >= userIds.length, { what: `${userIds.length} events committed` });
  const copies = await consumerApp.dataSource.getRepository(Copy).findBy({ consumer });
  expect(copies.map((copy) => copy.userId).sort()).toEqual([...userIds].sort());
  expect(await consumerApp.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(userIds.length);
  expect([...runs.values()].filter((count) => count !== 1)).toEqual([]);
  expect(runs.size).toBe(userIds.length);
}

describe.each<Engine>(['postgres', 'mariadb'])('outbox relay on %s', (engine) => {
  it('publishes a row whose transaction commits after later rows were published', async () => {
    const consumer = unique('Late.onUserCreated');
    const { Billing, runs } = billing(consumer);
    const consumerApp = await startApp({ engine, providers: [Billing], entities: [Copy] });
    const publisherApp = await startApp({ engine, exchange: consumerApp.exchange, sync: { outbox: { pollInterval: '100ms' } } });
    try {
      const publisher = publisherApp.app.get(SyncPublisher);
      const [early, late] = [unique('u-early'), unique('u-late')];
      const written = deferred();
      const release = deferred();
      const slow = publisher.transaction(async () => {
        await publisher.publish('UserCreated', { id: early }, { key: early });
        written.resolve();
        await release.promise;
      });
      await written.promise;
      await publisher.transaction(() => publisher.publish('UserCreated', { id: late }, { key: late }));
      await waitFor(async () => (await consumerApp.dataSource.getRepository(Copy).countBy({ consumer, userId: late })) === 1, { what: 'the later event' });
      const rows = await publisherApp.dataSource.getRepository(SyncOutboxMessage).findBy({ source: publisherApp.service });
      expect(rows.map((row) => row.key)).toEqual([late]); // the early row is not visible yet
      release.resolve();
      await slow;
      const [earlyRow] = await publisherApp.dataSource.getRepository(SyncOutboxMessage).findBy({ source: publisherApp.service, key: early });
      expect(earlyRow.position).toBeLessThan(rows[0].position);
      await waitFor(async () => (await consumerApp.dataSource.getRepository(Copy).countBy({ consumer, userId: early })) === 1, { what: 'the early event' });
      await expectAppliedOnce(consumerApp, consumer, runs, [early, late]);
    } finally {
      await publisherApp.close();
      await consumerApp.close();
    }
  });

  it('runs two relays on one table without publishing a row twice; every event is handled once', async () => {
    const consumer = unique('Pair.onUserCreated');
    const { Billing, runs } = billing(consumer);
    const consumerApp = await startApp({ engine, providers: [Billing], entities: [Copy] });
    const service = unique('users');
    const sync = { outbox: { pollInterval: '20ms', batchSize: 20 } };
    const first = await startApp({ engine, service, exchange: consumerApp.exchange, sync, keepTopology: true });
    const second = await startApp({ engine, service, exchange: consumerApp.exchange, sync, keepTopology: true });
    try {
      const ids = Array.from({ length: 300 }, (_, i) => `${service}-${i}`);
      const write = (app: TestApp, part: string[]) =>
        Promise.all(part.map((id) => app.app.get(SyncPublisher).transaction(() => app.app.get(SyncPublisher).publish('UserCreated', { id }))));
      await Promise.all([write(first, ids.slice(0, 150)), write(second, ids.slice(150))]);
      await waitFor(() => runs.size === ids.length, { timeoutMs: 30_000, what: 'all 300 events handled' });
      await waitFor(async () => (await first.app.get(SyncOutbox).backlog()) === 0, { what: 'an empty backlog' });
      await expectAppliedOnce(consumerApp, consumer, runs, ids);

      const relayed = first.metrics.snapshot().outboxRelayed + second.metrics.snapshot().outboxRelayed;
      const counts = consumerApp.metrics.snapshot(consumer);
      expect(relayed).toBe(ids.length); // SKIP LOCKED: each row claimed by one relay
      expect(counts.handled).toBe(ids.length);
      await waitFor(() => consumerApp.metrics.snapshot(consumer).handled + consumerApp.metrics.snapshot(consumer).duplicates === relayed, {
        what: 'every delivery either handled or counted as a duplicate',
      });
    } finally {
      await first.close();
      await second.close();
      await consumerApp.close();
    }
  });
});

describe.each<Engine>(['postgres', 'sqlite'])('outbox through a broker outage on %s', (engine) => {
  it('delivers all 500 events written while the broker stops and restarts, each handled exactly once', async () => {
    const consumer = unique('Outage.onUserCreated');
    const { Billing, runs } = billing(consumer);
    const consumerApp = await startApp({ engine, providers: [Billing], entities: [Copy] });
    const publisherApp = await startApp({
      engine,
      exchange: consumerApp.exchange,
      sync: { publishTimeout: '2s', reconnectDelay: '200ms', outbox: { pollInterval: '100ms', retryDelay: '100ms', maxRetryDelay: '1s' } },
    });
    try {
      const publisher = publisherApp.app.get(SyncPublisher);
      const outbox = publisherApp.app.get(SyncOutbox);
      const ids = Array.from({ length: 500 }, (_, i) => `${publisherApp.service}-${i}`);
      let backlogDuringOutage = 0;
      for (const [i, id] of ids.entries()) {
        await publisher.transaction(() => publisher.publish('UserCreated', { id }, { key: id }));
        // Events 151-400 are committed while the broker is down.
        if (i === 150) await stopBroker();
        if (i === 400) {
          backlogDuringOutage = await outbox.backlog();
          // Keep the broker away until publishes have timed out, so the relay's failure path runs too.
          await waitFor(() => publisherApp.metrics.snapshot().outboxRelayFailed > 0, { what: 'a relay publish to time out' });
          await startBroker();
        }
      }
      expect(backlogDuringOutage).toBeGreaterThan(0);
      await waitFor(() => runs.size === ids.length, { timeoutMs: 60_000, what: 'all 500 events handled' });
      await waitFor(async () => (await outbox.backlog()) === 0, { timeoutMs: 30_000, what: 'an empty backlog' });
      await expectAppliedOnce(consumerApp, consumer, runs, ids);
      // Rows whose publish timed out went out on a later try.
      const retried = await publisherApp.dataSource.getRepository(SyncOutboxMessage).findBy({ source: publisherApp.service, attempts: MoreThan(1) });
      expect(retried.length).toBeGreaterThan(0);
      expect(retried.every((row) => row.publishedAt !== null && row.lastError === null && row.nextAttemptAt === null)).toBe(true);
      expect(outbox.status()).toMatchObject({ running: true, consecutiveFailures: 0 });
    } finally {
      await startBroker();
      await publisherApp.close();
      await consumerApp.close();
    }
  });
});

describe('a publishing process killed between commit and dispatch', () => {
  const children: ChildProcessWithoutNullStreams[] = [];

  afterAll(() => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });

  function startPublisher(env: Record<string, string>): { child: ChildProcessWithoutNullStreams; output: () => string; exited: Promise<number | null> } {
    const child = spawn(process.execPath, ['--import', './test/support/ts-register.mjs', 'test/support/processes/outbox-publisher.ts'], {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: '1', DATABASE_URL: POSTGRES_URL, ...env },
    });
    children.push(child);
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return { child, output: () => output, exited };
  }

  it('delivers the committed events once it restarts (SIGKILL, PostgreSQL)', async () => {
    const consumer = unique('Killed.onUserCreated');
    const { Billing, runs } = billing(consumer);
    const consumerApp = await startApp({ engine: 'postgres', providers: [Billing], entities: [Copy] });
    const service = unique('users');
    const prefix = unique('killed');
    const common = { SERVICE: service, EXCHANGE: consumerApp.exchange, ID_PREFIX: prefix };
    try {
      // The relay is off in the first run, so the kill lands after the commits and before any dispatch.
      const first = startPublisher({ ...common, COUNT: '200', RELAY: 'off' });
      await waitFor(() => first.output().includes('COMMITTED 200'), { timeoutMs: 45_000, what: `the commits (output: ${first.output()})` });
      first.child.kill('SIGKILL');
      expect(await first.exited).toBeNull();
      const outbox = consumerApp.dataSource.getRepository(SyncOutboxMessage);
      expect(await outbox.countBy({ source: service, publishedAt: IsNull() })).toBe(200);
      expect(runs.size).toBe(0);

      const second = startPublisher({ ...common, COUNT: '0' });
      await waitFor(() => runs.size === 200, { timeoutMs: 45_000, what: `the 200 events after the restart (output: ${second.output()})` });
      const ids = Array.from({ length: 200 }, (_, i) => `${prefix}-${i}`);
      await expectAppliedOnce(consumerApp, consumer, runs, ids);
      await waitFor(async () => (await outbox.countBy({ source: service, publishedAt: IsNull() })) === 0, { what: 'every row marked published' });
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
    } finally {
      await consumerApp.close();
    }
  });
});
