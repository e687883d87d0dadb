import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { In } from 'typeorm';
import {
  deadLetterQueueName,
  keyBucket,
  partitionQueueName,
  partitionTopologyNames,
  SyncProcessedEvent,
  SyncPublisher,
  SyncServer,
  TopologyMismatchError,
  unkeyedExchangeName,
} from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { withBrokerStopped } from '../support/broker-control.js';
import { spawnTs, type TsProcess } from '../support/child-process.js';
import { POSTGRES_URL } from '../support/env.js';
import { PARTITION_EVENT, PartitionApplied, type PartitionEvent, partitionedHandler } from '../support/processes/partition-app.js';
import { unique, waitFor } from '../support/wait.js';

const PARTITIONS = 4;

const owned = (app: TestApp): number[] => app.app.get(SyncServer).consumerStatus()[0]?.partitions ?? [];

/** Publishes `rounds` sequences for every key, round by round, so each key's events are sent in order. */
async function publishUpdates(app: TestApp, keys: string[], rounds: number, failing: (key: string, sequence: number) => boolean = () => false): Promise<void> {
  const publisher = app.app.get(SyncPublisher);
  for (let sequence = 1; sequence <= rounds; sequence++) {
    await Promise.all(
      keys.map((key) => publisher.publish<PartitionEvent>(PARTITION_EVENT, { key, sequence, failures: failing(key, sequence) ? 1 : 0 }, { key, sequence })),
    );
  }
}

/** Per key, the sequences in the order their applications committed. */
async function logByKey(app: TestApp, consumer: string): Promise<Map<string, Array<{ sequence: number; instance: string }>>> {
  const rows = await app.dataSource.getRepository(PartitionApplied).find({ where: { consumer }, order: { n: 'ASC' } });
  const byKey = new Map<string, Array<{ sequence: number; instance: string }>>();
  for (const row of rows) byKey.set(row.key, [...(byKey.get(row.key) ?? []), { sequence: row.sequence, instance: row.instance }]);
  return byKey;
}

const count = (app: TestApp, consumer: string) => app.dataSource.getRepository(PartitionApplied).countBy({ consumer });

describe('partitions: N (PostgreSQL)', () => {
  const apps: TestApp[] = [];
  const children: TsProcess[] = [];

  afterEach(async () => {
    for (const child of children.splice(0)) await child.stop();
    for (const app of apps.splice(0).reverse()) await app.close();
  });

  async function start(consumer: string, instance: string, shared: { service?: string; exchange?: string }, handlerMs = 0, partitions = PARTITIONS): Promise<TestApp> {
    const app = await startApp({
      engine: 'postgres',
      providers: [partitionedHandler(consumer, instance, partitions, handlerMs)],
      entities: [PartitionApplied],
      keepTopology: apps.length > 0,
      ...shared,
    });
    // The first app deletes the shared topology when it closes (it closes last).
    apps.push(app);
    return app;
  }

  /** A second instance of the handler in a process of its own; prints the partitions it owns. */
  function spawnInstance(app: TestApp, consumer: string, instance: string, handlerMs: number): { process: TsProcess; owns: () => number[] } {
    const dir = mkdtempSync(join(tmpdir(), 'sync-partitions-'));
    const child = spawnTs('test/support/processes/partition-consumer.ts', {
      name: instance,
      logFile: join(dir, `${instance}.log`),
      env: {
        SERVICE: app.service,
        EXCHANGE: app.exchange,
        CONSUMER: consumer,
        INSTANCE: instance,
        PARTITIONS: String(PARTITIONS),
        DATABASE_URL: POSTGRES_URL,
        HANDLER_MS: String(handlerMs),
      },
    });
    children.push(child);
    let owns: number[] = [];
    child.onLine((line) => {
      const match = /^PARTITIONS (.*)$/.exec(line);
      if (match) owns = match[1].split(',').filter(Boolean).map(Number);
    });
    return { process: child, owns: () => owns };
  }

  it('shares the partitions between two processes and keeps every key in order, through in-place retries', async () => {
    const consumer = unique('Parted.onChanged');
    const first = await start(consumer, 'A', {});
    await waitFor(() => owned(first).length === PARTITIONS, { what: 'the only instance owning every partition' });
    const second = spawnInstance(first, consumer, 'B', 0);
    await second.process.waitForLine(/^READY$/, 60_000);
    await waitFor(() => owned(first).length === 2 && second.owns().length === 2, { what: 'two partitions each', timeoutMs: 20_000 });
    expect([...owned(first), ...second.owns()].sort()).toEqual([0, 1, 2, 3]);

    const keys = Array.from({ length: 100 }, (_, i) => `user-${i}`);
    // About 3% of the events fail once and are retried in place.
    const failing = (key: string, sequence: number) => (Number(key.slice(5)) * 7 + sequence) % 37 === 0;
    const failures = keys.flatMap((key) => Array.from({ length: 20 }, (_, i) => failing(key, i + 1))).filter(Boolean).length;
    await publishUpdates(first, keys, 20, failing);

    await waitFor(async () => (await count(first, consumer)) === 2_000, { what: '2,000 applications', timeoutMs: 60_000 });
    const log = await logByKey(first, consumer);
    for (const key of keys) {
      const applied = log.get(key) ?? [];
      // Strictly in order, each once, and by one instance: a key lives in one partition.
      expect({ key, sequences: applied.map((entry) => entry.sequence) }).toEqual({ key, sequences: Array.from({ length: 20 }, (_, i) => i + 1) });
      expect(new Set(applied.map((entry) => entry.instance)).size).toBe(1);
    }
    const instances = new Set([...log.values()].flatMap((applied) => applied.map((entry) => entry.instance)));
    expect(instances).toEqual(new Set(['A', 'B']));
    // Each failing event ran twice: its first run rolled back, so the committed log holds it once.
    const attempts = await first.dataSource.getRepository(PartitionApplied).countBy({ consumer, attempt: 2 });
    expect(failures).toBeGreaterThan(10);
    expect(attempts).toBe(failures);
    expect(await first.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(2_000);

    // An event without a key takes partition 0 and is handled like any other.
    await first.app.get(SyncPublisher).publish<PartitionEvent>(PARTITION_EVENT, { key: 'no-key', sequence: 1 });
    await waitFor(async () => (await count(first, consumer)) === 2_001, { what: 'the keyless event applied' });
  }, 120_000);

  it('hands a killed instance’s partitions to another instance, and order still holds', async () => {
    const consumer = unique('Killed.onChanged');
    const survivor = await start(consumer, 'survivor', {}, 2);
    await waitFor(() => owned(survivor).length === PARTITIONS, { what: 'the survivor owning every partition' });
    const { process: victim, owns: victimOwns } = spawnInstance(survivor, consumer, 'victim', 2);
    await victim.waitForLine(/^READY$/, 60_000);
    await waitFor(() => owned(survivor).length === 2 && victimOwns().length === 2, { what: 'two partitions each', timeoutMs: 20_000 });

    const keys = Array.from({ length: 50 }, (_, i) => `member-${i}`);
    const publishing = publishUpdates(survivor, keys, 20);
    await waitFor(async () => (await survivor.dataSource.getRepository(PartitionApplied).countBy({ consumer, instance: 'victim' })) >= 100, {
      what: 'the victim applying its first events',
      timeoutMs: 30_000,
    });
    victim.child.kill('SIGKILL');
    await victim.exited;
    await waitFor(() => owned(survivor).length === PARTITIONS, { what: 'the survivor taking every partition back', timeoutMs: 20_000 });
    await publishing;

    await waitFor(async () => (await count(survivor, consumer)) === 1_000, { what: '1,000 applications', timeoutMs: 45_000 });
    const log = await logByKey(survivor, consumer);
    for (const key of keys) {
      expect({ key, sequences: (log.get(key) ?? []).map((entry) => entry.sequence) }).toEqual({ key, sequences: Array.from({ length: 20 }, (_, i) => i + 1) });
    }
    const byInstance = (instance: string) => [...log.values()].flat().filter((entry) => entry.instance === instance).length;
    expect(byInstance('victim')).toBeGreaterThanOrEqual(100);
    expect(byInstance('survivor')).toBeGreaterThan(0);
    const eventIds = await survivor.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer });
    expect(eventIds).toBe(1_000);
    await survivor.dataSource.getRepository(PartitionApplied).delete({ consumer: In([consumer]) });
  }, 120_000);

  it('takes its partitions back after a broker restart, and order still holds', async () => {
    const consumer = unique('Restarted.onChanged');
    const app = await start(consumer, 'only', {}, 1);
    await waitFor(() => owned(app).length === PARTITIONS, { what: 'every partition owned' });
    const keys = Array.from({ length: 50 }, (_, i) => `account-${i}`);
    const publishing = publishUpdates(app, keys, 10);
    await waitFor(async () => (await count(app, consumer)) >= 150, { what: '150 applications', timeoutMs: 30_000 });
    await withBrokerStopped(() => waitFor(() => owned(app).length === 0, { what: 'the partitions lost with the connection' }));
    await waitFor(() => owned(app).length === PARTITIONS, { what: 'every partition owned again', timeoutMs: 30_000 });
    await publishing;
    await waitFor(async () => (await count(app, consumer)) === 500, { what: '500 applications', timeoutMs: 45_000 });
    const log = await logByKey(app, consumer);
    for (const key of keys) {
      expect({ key, sequences: (log.get(key) ?? []).map((entry) => entry.sequence) }).toEqual({ key, sequences: Array.from({ length: 10 }, (_, i) => i + 1) });
    }
  }, 120_000);

  it('shuts down during an in-place retry wait without waiting it out, and gives the event back to its partition', async () => {
    const consumer = unique('Waiting.onChanged');
    const app = await startApp({
      engine: 'postgres',
      providers: [partitionedHandler(consumer, 'only', 2, 0, { attempts: 3, delays: ['1m'] })],
      entities: [PartitionApplied],
      keepTopology: true,
    });
    const queue = app.queueOf(consumer);
    const broker = await Broker.connect();
    try {
      await waitFor(() => owned(app).length === 2, { what: 'both partitions owned' });
      await app.app.get(SyncPublisher).publish<PartitionEvent>(PARTITION_EVENT, { key: 'k', sequence: 1, failures: 5 }, { key: 'k', sequence: 1 });
      await waitFor(() => app.metrics.snapshot(consumer).retried === 1, { what: 'the event waiting for its retry in place' });
      const closing = Date.now();
      await app.close();
      expect(Date.now() - closing).toBeLessThan(10_000);
      const partition = partitionQueueName(queue, keyBucket('k') % 2);
      await waitFor(async () => (await broker.messageCount(partition)) === 1, { what: 'the event back on its partition' });
      expect(await broker.messageCount(deadLetterQueueName(queue))).toBe(0);
    } finally {
      const { queues, exchanges } = partitionTopologyNames(queue, 2);
      await broker.deleteQueues(...queues);
      for (const exchange of [...exchanges, app.exchange]) await broker.deleteExchange(exchange);
      await broker.close();
    }
  });

  it('fails startup when the partition count of an existing handler changes', async () => {
    const consumer = unique('Resized.onChanged');
    const first = await start(consumer, 'A', {});
    const service = first.service;
    const exchange = first.exchange;
    try {
      await expect(startApp({ engine: 'postgres', providers: [partitionedHandler(consumer, 'B', 8)], entities: [PartitionApplied], service, exchange, keepTopology: true })).rejects.toThrow(
        TopologyMismatchError,
      );
    } finally {
      // The refused start declared the alternate exchange of 8 partitions before the mismatch.
      const broker = await Broker.connect();
      await broker.deleteExchange(unkeyedExchangeName(first.queueOf(consumer), 8));
      await broker.close();
    }
  });
});
