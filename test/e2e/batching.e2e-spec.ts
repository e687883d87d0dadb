import { Injectable } from '@nestjs/common';
import { Column, Entity, In, PrimaryGeneratedColumn } from 'typeorm';
import { deadLetterQueueName, type EventContext, OnEvent, SYNC_HEADERS, SyncProcessedEvent } from '../../lib/index.js';
import { pipelinedClient } from '../../lib/persistence/write-hold.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { ENGINES, typeOrmOptions } from '../support/databases.js';
import { deferred } from '../support/deferred.js';
import { unique, waitFor } from '../support/wait.js';

@Entity('test_batch_effects')
class BatchEffect {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ name: 'event_id', type: 'varchar', length: 200 }) eventId!: string;
}

/** On PostgreSQL, whether the transaction's socket holds its writes (they leave together at the end of the turn). */
function writesHeld(ctx: EventContext): boolean | undefined {
  const corked = (pipelinedClient(ctx.manager)?.connection?.stream as { writableCorked?: number } | undefined)?.writableCorked;
  return corked === undefined ? undefined : corked > 0;
}

function envelope(eventId: string, data: unknown, eventType = 'Batch.Changed'): string {
  return JSON.stringify({ eventId, eventType, data, timestamp: new Date().toISOString(), source: 'test' });
}

/**
 * Deliveries that are already waiting run as one transaction. Each test fills the queue while
 * no consumer is attached, then starts one, so the first deliveries arrive together.
 */
describe.each(ENGINES)('batched deliveries on %s', (engine) => {
  const consumer = unique('Batch.onChanged');
  const sticky = unique('Batch.onSticky');
  const parallel = unique('Batch.onParallel');
  const runs: Array<{ eventId: string; attempt: number; transaction: unknown; together?: boolean; handledBefore?: number; writesHeld?: boolean }> = [];
  const behaviour = new Map<string, 'fail' | 'swallow-db-error' | 'db-error' | 'fail-second-run' | 'block' | 'block-later'>();
  let blocking = Promise.resolve();
  let blockingLater = Promise.resolve();
  // Pipelined connections on PostgreSQL: the parallel handler needs them, the others must not mind.
  const typeorm = typeOrmOptions(engine, [BatchEffect], { pipeline: true });
  const running = { now: 0, most: 0 };
  let broker: Broker;
  let app: TestApp | undefined;
  let service: string;
  let exchange: string;

  @Injectable()
  class Projection {
    @OnEvent('Batch.Changed', { consumer, retry: { attempts: 2, delays: ['50ms'] } })
    async onChanged(_data: unknown, ctx: EventContext) {
      // The query runner is the transaction's connection (SQLite has a single one).
      runs.push({ eventId: ctx.eventId, attempt: ctx.attempt, transaction: ctx.manager.queryRunner });
      await ctx.manager.insert(BatchEffect, { consumer, eventId: ctx.eventId });
      const mode = behaviour.get(ctx.eventId);
      if (mode === 'fail') throw new Error(`event ${ctx.eventId} cannot be applied`);
      if (mode === 'swallow-db-error') await ctx.manager.query('SELECT * FROM no_such_table_here').catch(() => undefined);
    }

    @OnEvent('Batch.Sticky', { consumer: sticky, batchSize: 4, retry: { attempts: 2, delays: ['50ms'] } })
    async onSticky(_data: unknown, ctx: EventContext) {
      runs.push({ eventId: ctx.eventId, attempt: ctx.attempt, transaction: ctx.manager.queryRunner });
      await ctx.manager.insert(BatchEffect, { consumer: sticky, eventId: ctx.eventId });
      if (behaviour.get(ctx.eventId) === 'fail') throw new Error(`event ${ctx.eventId} cannot be applied`);
    }

    @OnEvent('Batch.Parallel', { consumer: parallel, parallel: true, retry: { attempts: 2, delays: ['50ms'] } })
    async onParallel(_data: unknown, ctx: EventContext) {
      running.most = Math.max(running.most, ++running.now);
      try {
        runs.push({ eventId: ctx.eventId, attempt: ctx.attempt, transaction: ctx.manager.queryRunner, together: running.now > 1, handledBefore: app?.metrics.snapshot(parallel).handled, writesHeld: writesHeld(ctx) });
        const mode = behaviour.get(ctx.eventId);
        if (mode === 'block') await blocking;
        if (mode === 'block-later') await blockingLater;
        // Sent in the same pipeline as the other handlers' inserts, ahead of some of them.
        if (mode === 'db-error') await ctx.manager.query('SELECT * FROM no_such_table_here');
        await ctx.manager.insert(BatchEffect, { consumer: parallel, eventId: ctx.eventId });
        if (mode === 'fail') throw new Error(`event ${ctx.eventId} cannot be applied`);
        if (mode === 'fail-second-run' && runs.filter((run) => run.eventId === ctx.eventId).length === 2) throw new Error(`event ${ctx.eventId} failed on its second run`);
      } finally {
        running.now--;
      }
    }
  }

  const start = () => startApp({ engine, providers: [Projection], entities: [BatchEffect], typeorm, service, exchange, keepTopology: true });

  beforeAll(async () => {
    broker = await Broker.connect();
    service = unique('svc');
    exchange = unique('ex');
    // Declare the queue and its bindings, then leave it without a consumer.
    const first = await start();
    service = first.service;
    await first.close();
  });

  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  afterAll(async () => {
    const cleaner = await start();
    await cleaner.dataSource.getRepository(BatchEffect).delete({ consumer: In([consumer, sticky, parallel]) });
    await cleaner.dataSource.getRepository(SyncProcessedEvent).delete({ consumer: In([consumer, sticky, parallel]) });
    await cleaner.close();
    for (const queue of [`${service}.${consumer}`, `${service}.${sticky}`, `${service}.${parallel}`]) await broker.deleteQueues(queue, deadLetterQueueName(queue), `${queue}.retry.50`);
    await broker.deleteExchange(exchange);
    await broker.close();
    typeorm.cleanup();
  });

  it('applies each event once, retries a failing one alone, and commits its neighbours', async () => {
    const ids = Array.from({ length: 30 }, (_, i) => `${unique('evt')}-${i}`);
    const failing = ids[9];
    behaviour.set(failing, 'fail');
    // One id twice in the same window: the second copy is a duplicate.
    for (const id of [...ids, ids[3]]) await broker.publishRaw(exchange, 'Batch.Changed', envelope(id, { id }));
    runs.length = 0;
    app = await start();

    const [dead] = await broker.takeAll(deadLetterQueueName(`${service}.${consumer}`), 1);
    await waitFor(() => app!.metrics.snapshot(consumer).handled === ids.length - 1, { what: '29 events handled' });
    expect(JSON.parse(dead.content.toString()).eventId).toBe(failing);
    expect(dead.properties.headers?.[SYNC_HEADERS.attempts]).toBe(2);
    expect(dead.properties.headers?.[SYNC_HEADERS.reason]).toBe('exhausted');

    // The failing event ran once per attempt, never more.
    expect(runs.filter((run) => run.eventId === failing).map((run) => run.attempt)).toEqual([1, 2]);
    // Effects: one per healthy event, none from the failing one.
    const effects = await app.dataSource.getRepository(BatchEffect).findBy({ consumer, eventId: In(ids) });
    expect(effects.map((effect) => effect.eventId).sort()).toEqual(ids.filter((id) => id !== failing).sort());
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer, eventId: In(ids) })).toBe(ids.length - 1);
    expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 29, duplicates: 1, retried: 1, deadLettered: 1 });
    // They did run in shared transactions: fewer transactions than events.
    const transactions = new Set(runs.filter((run) => run.eventId !== failing).map((run) => run.transaction));
    expect(transactions.size).toBeLessThan(ids.length - 1);
  });

  /**
   * Fills the queue of `eventType` with 12 events, those at `failAt` failing on every attempt,
   * starts a consumer and waits until they are dead-lettered and the rest handled. Checks what
   * holds in every batch mode: each failing event ran once per attempt, a healthy one at most
   * twice (the first pass, rolled back at the first failure, and the rest of the batch, where
   * later failures roll back alone), and effects exist for the healthy events only.
   */
  async function settleTwelve(eventType: string, name: string, failAt: number[]) {
    const ids = Array.from({ length: 12 }, (_, i) => `${unique('evt')}-${i}`);
    const failing = failAt.map((index) => ids[index]);
    for (const id of failing) behaviour.set(id, 'fail');
    for (const id of ids) await broker.publishRaw(exchange, eventType, envelope(id, { id }, eventType));
    runs.length = 0;
    app = await start();

    const dead = await broker.takeAll(deadLetterQueueName(`${service}.${name}`), failing.length);
    await waitFor(() => app!.metrics.snapshot(name).handled === ids.length - failing.length, { what: `${ids.length - failing.length} events handled` });
    expect(dead.map((message) => JSON.parse(message.content.toString()).eventId).sort()).toEqual([...failing].sort());
    const runsOf = (id: string) => runs.filter((run) => run.eventId === id);
    for (const id of failing) expect(runsOf(id).map((run) => run.attempt)).toEqual([1, 2]);
    const healthy = ids.filter((id) => !failing.includes(id));
    for (const id of healthy) expect(runsOf(id).length).toBeLessThanOrEqual(2);
    const effects = await app.dataSource.getRepository(BatchEffect).findBy({ consumer: name, eventId: In(ids) });
    expect(effects.map((effect) => effect.eventId).sort()).toEqual([...healthy].sort());
    return { ids, failing, healthy, runsOf };
  }

  it('rolls back a second failing handler alone (savepoint) instead of running the batch again', async () => {
    const { ids, failing, healthy } = await settleTwelve('Batch.Changed', consumer, [2, 6, 10]);
    // A failed event's dedupe row went with its savepoint.
    expect(await app!.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer, eventId: In(ids) })).toBe(healthy.length);
    expect(app!.metrics.snapshot(consumer)).toMatchObject({ handled: healthy.length, retried: failing.length, deadLettered: failing.length });
  });

  it('keeps taking savepoints in the next batches while their handlers keep failing', async () => {
    // Batches of 4 with every fourth event failing at the third place: once a batch has failed,
    // the next ones run isolated, so their first handlers are not run a second time.
    const { healthy, runsOf } = await settleTwelve('Batch.Sticky', sticky, [2, 6, 10]);
    // Only the handlers before the first failure of the first failing batch ran twice (rolled back, then isolated).
    expect(healthy.filter((id) => runsOf(id).length === 2).length).toBeLessThanOrEqual(2);
  });

  it('runs the handlers of a parallel batch at once, retries the failing ones alone, and commits the others', async () => {
    running.most = 0;
    const { ids, failing, healthy } = await settleTwelve('Batch.Parallel', parallel, [2, 6, 10]);
    expect(running.most).toBeGreaterThan(1);
    expect(await app!.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: parallel, eventId: In(ids) })).toBe(healthy.length);
    expect(app!.metrics.snapshot(parallel)).toMatchObject({ handled: healthy.length, retried: failing.length, deadLettered: failing.length });
  });

  it('runs what is left of a failed parallel batch one by one, in savepoints', async () => {
    // Pass 1, all twelve at once: `failing` fails and is retried. Pass 2, the other eleven one
    // after another in savepoints: `flaky` fails on its second run and is rolled back alone.
    const ids = Array.from({ length: 12 }, (_, i) => `${unique('evt')}-${i}`);
    const [failing, flaky] = [ids[3], ids[8]];
    behaviour.set(failing, 'fail');
    behaviour.set(flaky, 'fail-second-run');
    // A first event holds the handler's one run while the twelve arrive, so they join its batch.
    const blocker = unique('evt-blocker');
    behaviour.set(blocker, 'block');
    const release = deferred();
    blocking = release.promise;
    runs.length = 0;
    app = await start();
    await broker.publishRaw(exchange, 'Batch.Parallel', envelope(blocker, {}, 'Batch.Parallel'));
    await waitFor(() => runs.some((run) => run.eventId === blocker), { what: 'the blocking run to start' });
    for (const id of ids) await broker.publishRaw(exchange, 'Batch.Parallel', envelope(id, { id }, 'Batch.Parallel'));
    await waitFor(async () => (await broker.messageCount(app!.queueOf(parallel))) === 0, { what: 'the twelve delivered' });
    release.resolve();

    const [dead] = await broker.takeAll(deadLetterQueueName(`${service}.${parallel}`), 1);
    await waitFor(() => app!.metrics.snapshot(parallel).handled === ids.length, { what: '11 events and the blocker handled' });
    expect(JSON.parse(dead.content.toString()).eventId).toBe(failing);
    expect(app.metrics.snapshot(parallel)).toMatchObject({ handled: ids.length, retried: 2, deadLettered: 1 });
    const runsOf = (id: string) => runs.filter((run) => run.eventId === id);
    expect(runsOf(failing).map((run) => run.attempt)).toEqual([1, 2]);
    // The flaky event: applied on its retry, after a rolled-back first run and a failed second.
    expect(runsOf(flaky).map((run) => run.attempt)).toEqual([1, 1, 2]);
    // The others ran twice: all at once (rolled back), then one by one.
    const healthy = ids.filter((id) => id !== failing && id !== flaky);
    for (const id of healthy) expect(runsOf(id).length).toBe(2);
    expect(healthy.filter((id) => runsOf(id)[0].together).length).toBeGreaterThan(healthy.length / 2);
    expect(healthy.filter((id) => runsOf(id)[1].together)).toEqual([]);
    const effects = await app.dataSource.getRepository(BatchEffect).findBy({ consumer: parallel, eventId: In(ids) });
    expect(effects.map((effect) => effect.eventId).sort()).toEqual(ids.filter((id) => id !== failing).sort());
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: parallel, eventId: In(ids) })).toBe(ids.length - 1);
  });

  it("starts deliveries that arrive while a parallel batch runs in that batch's transaction, at once", async () => {
    // The blocker holds the handler's one run; with nothing joining it, the others would wait for it.
    const blocker = unique('evt-blocker');
    behaviour.set(blocker, 'block');
    const release = deferred();
    blocking = release.promise;
    const joiners = [unique('evt-join'), unique('evt-join'), unique('evt-join')];
    runs.length = 0;
    app = await start();
    await broker.publishRaw(exchange, 'Batch.Parallel', envelope(blocker, {}, 'Batch.Parallel'));
    await waitFor(() => runs.some((run) => run.eventId === blocker), { what: 'the blocking run to start' });
    // Three events, a second copy of one of them, and a body that is no event.
    for (const id of [...joiners, joiners[0]]) await broker.publishRaw(exchange, 'Batch.Parallel', envelope(id, { id }, 'Batch.Parallel'));
    await broker.publishRaw(exchange, 'Batch.Parallel', 'not an event');
    await waitFor(() => joiners.every((id) => runs.some((run) => run.eventId === id)), { what: 'the three to start while the blocker runs' });
    expect(app.metrics.snapshot(parallel).handled).toBe(0);
    release.resolve();

    const [dead] = await broker.takeAll(deadLetterQueueName(`${service}.${parallel}`), 1);
    expect(dead.content.toString()).toBe('not an event');
    expect(dead.properties.headers?.[SYNC_HEADERS.reason]).toBe('malformed');
    await waitFor(() => app!.metrics.snapshot(parallel).handled === 4, { what: 'the blocker and the three handled' });
    expect(app.metrics.snapshot(parallel)).toMatchObject({ handled: 4, duplicates: 1, retried: 0, deadLettered: 1 });
    // Each ran once, all in the blocker's transaction, the three while it still ran.
    expect(runs.map((run) => run.eventId).sort()).toEqual([blocker, ...joiners].sort());
    expect(new Set(runs.map((run) => run.transaction)).size).toBe(1);
    expect(runs.filter((run) => joiners.includes(run.eventId)).every((run) => run.together)).toBe(true);
    // On PostgreSQL the joined handlers' statements leave in one write, as the batch's own do.
    const held = runs.map((run) => run.writesHeld);
    expect(held).toEqual(runs.map(() => (engine === 'postgres' ? true : undefined)));
    const effects = await app.dataSource.getRepository(BatchEffect).findBy({ consumer: parallel, eventId: In([blocker, ...joiners]) });
    expect(effects.map((effect) => effect.eventId).sort()).toEqual([blocker, ...joiners].sort());
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: parallel, eventId: In([blocker, ...joiners]) })).toBe(4);
  });

  it('takes no more deliveries into a parallel batch once the handlers it started with have settled', async () => {
    // `first` starts the batch, `joiner` joins it and holds it open; `late` arrives after `first`
    // has settled, so it must wait for a run of its own instead of extending the batch's commit.
    const [first, joiner, late] = [unique('evt-first'), unique('evt-join'), unique('evt-late')];
    behaviour.set(first, 'block');
    behaviour.set(joiner, 'block-later');
    const [releaseFirst, releaseJoiner] = [deferred(), deferred()];
    blocking = releaseFirst.promise;
    blockingLater = releaseJoiner.promise;
    runs.length = 0;
    app = await start();
    const publish = (id: string) => broker.publishRaw(exchange, 'Batch.Parallel', envelope(id, { id }, 'Batch.Parallel'));
    await publish(first);
    await waitFor(() => runs.some((run) => run.eventId === first), { what: 'the first run to start' });
    await publish(joiner);
    await waitFor(() => runs.some((run) => run.eventId === joiner), { what: 'the joiner to start' });
    releaseFirst.resolve();
    await waitFor(() => running.now === 1, { what: 'the first handler to settle' });
    await publish(late);
    await waitFor(async () => (await broker.messageCount(app!.queueOf(parallel))) === 0, { what: 'the late event delivered' });
    releaseJoiner.resolve();

    await waitFor(() => app!.metrics.snapshot(parallel).handled === 3, { what: 'all three handled' });
    const runOf = (id: string) => runs.find((run) => run.eventId === id)!;
    expect(runs).toHaveLength(3);
    expect(runOf(joiner).together).toBe(true);
    expect(runOf(joiner).handledBefore).toBe(0);
    // The late event started only after the batch of the other two had committed.
    expect(runOf(late).handledBefore).toBe(2);
    expect(await app.dataSource.getRepository(BatchEffect).countBy({ consumer: parallel, eventId: In([first, joiner, late]) })).toBe(3);
  });

  if (engine === 'postgres') {
    it('does not count the aborted transaction against the parallel handlers that met it', async () => {
      // One handler's failed statement aborts the batch's transaction; the statements of the
      // others that run at the same time then fail too (25P02). Only the first goes the retry way.
      const ids = Array.from({ length: 12 }, (_, i) => `${unique('evt')}-${i}`);
      const broken = ids[5];
      behaviour.set(broken, 'db-error');
      for (const id of ids) await broker.publishRaw(exchange, 'Batch.Parallel', envelope(id, { id }, 'Batch.Parallel'));
      runs.length = 0;
      app = await start();

      const [dead] = await broker.takeAll(deadLetterQueueName(`${service}.${parallel}`), 1);
      await waitFor(() => app!.metrics.snapshot(parallel).handled === ids.length - 1, { what: '11 events handled' });
      expect(JSON.parse(dead.content.toString()).eventId).toBe(broken);
      expect(dead.properties.headers?.[SYNC_HEADERS.errorMessage]).toMatch(/no_such_table_here/);
      expect(app.metrics.snapshot(parallel)).toMatchObject({ handled: ids.length - 1, retried: 1, deadLettered: 1 });
      const effects = await app.dataSource.getRepository(BatchEffect).findBy({ consumer: parallel, eventId: In(ids) });
      expect(effects.map((effect) => effect.eventId).sort()).toEqual(ids.filter((id) => id !== broken).sort());
    });

    it('refuses to start a parallel handler on PostgreSQL connections without pipeline mode, saying how to fix it', async () => {
      @Injectable()
      class Unpipelined {
        @OnEvent('Batch.Unpipelined', { consumer: unique('Batch.onUnpipelined'), parallel: true })
        async onUnpipelined() {}
      }
      await expect(startApp({ engine, providers: [Unpipelined], entities: [BatchEffect] })).rejects.toThrow(/parallel \(Unpipelined\.onUnpipelined\).*extra: \{ pipeline: true \}/s);
    });

    it('falls back to one transaction per event when a handler swallows a database error, and retries only that event', async () => {
      const ids = Array.from({ length: 12 }, (_, i) => `${unique('evt')}-${i}`);
      const swallowing = ids[4];
      behaviour.set(swallowing, 'swallow-db-error');
      for (const id of ids) await broker.publishRaw(exchange, 'Batch.Changed', envelope(id, { id }));
      runs.length = 0;
      app = await start();

      const [dead] = await broker.takeAll(deadLetterQueueName(`${service}.${consumer}`), 1);
      await waitFor(() => app!.metrics.snapshot(consumer).handled === ids.length - 1, { what: '11 events handled' });
      expect(JSON.parse(dead.content.toString()).eventId).toBe(swallowing);
      expect(dead.properties.headers?.[SYNC_HEADERS.errorName]).toBe('AbortedTransactionError');
      const effects = await app.dataSource.getRepository(BatchEffect).findBy({ consumer, eventId: In(ids) });
      expect(effects.map((effect) => effect.eventId).sort()).toEqual(ids.filter((id) => id !== swallowing).sort());
    });
  }
});

/**
 * A committed batch is acked with one multiple ack when every earlier delivery is settled. One
 * that is still running must never be covered: here it is abandoned at shutdown and has to come
 * back to the queue.
 */
describe('acking a batch while an earlier delivery still runs (PostgreSQL)', () => {
  const consumer = unique('Batch.onSlow');
  const started: string[] = [];
  const release = deferred();
  let broker: Broker;

  @Injectable()
  class Slow {
    @OnEvent('Batch.Slow', { consumer, concurrency: 2, retry: false })
    async onSlow(data: { block?: boolean }, ctx: EventContext) {
      started.push(ctx.eventId);
      if (data.block) await release.promise;
      await ctx.manager.insert(BatchEffect, { consumer, eventId: ctx.eventId });
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
  });

  afterAll(async () => {
    release.resolve();
    await broker.close();
  });

  it('acks the later batch alone, so the running delivery returns to the queue when abandoned', async () => {
    // prefetch 4 with concurrency 2: a full share is 2 deliveries.
    const app = await startApp({ engine: 'postgres', providers: [Slow], entities: [BatchEffect], sync: { prefetch: 4, shutdownTimeout: '100ms' }, keepTopology: true });
    const queue = app.queueOf(consumer);
    try {
      const blocked = unique('evt-blocked');
      const later = [unique('evt-later'), unique('evt-later')];
      const publish = (id: string, data: unknown) => broker.publishRaw(app.exchange, 'Batch.Slow', JSON.stringify({ eventId: id, eventType: 'Batch.Slow', data, timestamp: new Date().toISOString(), source: 'test' }));
      await publish(blocked, { block: true });
      await waitFor(() => started.includes(blocked), { what: 'the blocking run to start' });
      for (const id of later) await publish(id, {});
      await waitFor(() => app.metrics.snapshot(consumer).handled === 2, { what: 'the later batch to commit' });
      expect(await app.dataSource.getRepository(BatchEffect).countBy({ consumer, eventId: In(later) })).toBe(2);

      // Shutdown gives up on the blocked run: its message must still be unacked, so it comes back.
      await app.close();
      await waitFor(async () => (await broker.messageCount(queue)) === 1, { what: 'the abandoned delivery back on the queue' });
      const [back] = await broker.takeAll(queue, 1);
      expect(JSON.parse(back.content.toString()).eventId).toBe(blocked);
      expect(back.fields.redelivered).toBe(true);
    } finally {
      release.resolve();
      const cleaner = await startApp({ engine: 'postgres', entities: [BatchEffect] });
      await cleaner.dataSource.getRepository(BatchEffect).delete({ consumer });
      await cleaner.dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
      await cleaner.close();
      await broker.deleteQueues(queue, deadLetterQueueName(queue));
      await broker.deleteExchange(app.exchange);
    }
  });
});
