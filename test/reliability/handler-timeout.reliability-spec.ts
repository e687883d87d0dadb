import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Injectable } from '@nestjs/common';
import { Column, Entity, In, PrimaryGeneratedColumn } from 'typeorm';
import { deadLetterQueueName, type EventContext, OnEvent, SYNC_HEADERS } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { type Deferred, deferred } from '../support/deferred.js';
import { ENGINES } from '../support/databases.js';
import { LogCapture } from '../support/log-capture.js';
import { unique, waitFor } from '../support/wait.js';

const run = promisify(execFile);

@Entity('test_timeout_runs')
class RunRow {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ name: 'event_id', type: 'varchar', length: 200 }) eventId!: string;
  @Column({ type: 'int' }) attempt!: number;
  @Column({ type: 'varchar', length: 20 }) note!: string;
}

function envelope(eventId: string, data: unknown, eventType = 'Item.Changed'): string {
  return JSON.stringify({ eventId, eventType, data, timestamp: new Date().toISOString(), source: 'test' });
}

/**
 * A handler that runs past its handlerTimeout fails like any other: its transaction rolls back,
 * ctx.signal aborts, the event goes the retry way, and whatever the run does after its timeout
 * through ctx is refused (on SQLite it would otherwise land in a later event's transaction).
 */
describe.each(ENGINES)('handlerTimeout on %s', (engine) => {
  const consumer = unique('Slow.onChanged');
  const stuck = new Map<string, Deferred<void>>();
  const aborted: string[] = [];
  const lateWrites: string[] = [];
  let broker: Broker;
  let app: TestApp;

  @Injectable()
  class Slow {
    @OnEvent('Item.Changed', { consumer, handlerTimeout: '300ms', retry: { attempts: 3, delays: ['50ms'] } })
    async onChanged(data: { hang?: 'first' | 'always' }, ctx: EventContext) {
      await ctx.manager.insert(RunRow, { eventId: ctx.eventId, attempt: ctx.attempt, note: 'run' });
      if (data.hang === 'always' || (data.hang === 'first' && ctx.attempt === 1)) {
        ctx.signal.addEventListener('abort', () => aborted.push(`${ctx.eventId}#${ctx.attempt}`));
        const release = deferred<void>();
        stuck.set(`${ctx.eventId}#${ctx.attempt}`, release);
        await release.promise;
        try {
          await ctx.manager.insert(RunRow, { eventId: ctx.eventId, attempt: ctx.attempt, note: 'late' });
          lateWrites.push('written');
        } catch (error) {
          lateWrites.push((error as Error).name);
        }
      }
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine, providers: [Slow], entities: [RunRow] });
  });

  afterAll(async () => {
    for (const release of stuck.values()) release.resolve();
    await app?.close();
    await broker?.close();
  });

  it('fails a run past its timeout, rolls it back, retries it, and refuses what it does late', async () => {
    const [slow, ...others] = Array.from({ length: 5 }, () => unique('evt'));
    await broker.publishRaw(app.exchange, 'Item.Changed', envelope(slow, { hang: 'first' }));
    for (const id of others) await broker.publishRaw(app.exchange, 'Item.Changed', envelope(id, {}));

    await waitFor(() => app.metrics.snapshot(consumer).handled === 5, { what: 'all five events handled', timeoutMs: 20_000 });
    expect(aborted).toEqual([`${slow}#1`]);
    expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 5, retried: 1, deadLettered: 0 });

    // The timed-out run goes on until released; its late write is refused, not committed anywhere.
    stuck.get(`${slow}#1`)!.resolve();
    await waitFor(() => lateWrites.length === 1, { what: 'the late write attempt' });
    expect(lateWrites).toEqual(['HandlerRunOverError']);

    const rows = await app.dataSource.getRepository(RunRow).findBy({ eventId: In([slow, ...others]) });
    expect(rows.filter((row) => row.eventId === slow).map((row) => [row.attempt, row.note])).toEqual([[2, 'run']]);
    expect(rows.filter((row) => row.note === 'late')).toEqual([]);
    expect(rows.filter((row) => row.eventId !== slow).map((row) => row.eventId).sort()).toEqual([...others].sort());
  });

  it('dead-letters an event whose every run times out, naming HandlerTimeoutError', async () => {
    const id = unique('evt');
    await broker.publishRaw(app.exchange, 'Item.Changed', envelope(id, { hang: 'always' }));
    const [dead] = await broker.takeAll(deadLetterQueueName(app.queueOf(consumer)), 1, 20_000);
    expect(JSON.parse(dead.content.toString()).eventId).toBe(id);
    expect(dead.properties.headers).toMatchObject({
      [SYNC_HEADERS.reason]: 'exhausted',
      [SYNC_HEADERS.attempts]: 3,
      [SYNC_HEADERS.errorName]: 'HandlerTimeoutError',
    });
    expect(String(dead.properties.headers?.[SYNC_HEADERS.errorMessage])).toMatch(/did not finish within 300 ms \(handlerTimeout\)/);
    expect(aborted.filter((entry) => entry.startsWith(`${id}#`)).sort()).toEqual([`${id}#1`, `${id}#2`, `${id}#3`]);
    expect(await app.dataSource.getRepository(RunRow).countBy({ eventId: id })).toBe(0);
  });
});

/**
 * RabbitMQ closes a channel whose delivery stays unacknowledged past its consumer_timeout. The
 * broker's timeout is lowered to 3 s (checked every second) for these tests and restored after.
 */
describe('RabbitMQ consumer timeout', () => {
  const hold = new Set<Deferred<void>>();
  let broker: Broker;

  async function setBrokerEnv(key: string, value: number): Promise<void> {
    await run('rabbitmqctl', ['eval', `application:set_env(rabbit, ${key}, ${value}).`], { timeout: 30_000 });
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    // Channels read these when they open: set them before the apps start.
    await setBrokerEnv('consumer_timeout', 3_000);
    await setBrokerEnv('channel_tick_interval', 1_000);
  });

  afterAll(async () => {
    for (const release of hold) release.resolve();
    await setBrokerEnv('consumer_timeout', 1_800_000);
    await setBrokerEnv('channel_tick_interval', 60_000);
    await broker?.close();
  });

  async function start(handlerTimeout: '500ms' | false, logs: LogCapture) {
    const consumer = unique('Stuck.onChanged');
    const handled: string[] = [];
    @Injectable()
    class Stuck {
      @OnEvent('Item.Changed', { consumer, handlerTimeout, retry: { attempts: 5, delays: ['50ms'] } })
      async onChanged(data: { hang?: boolean }, ctx: EventContext) {
        if (data.hang && ctx.attempt === 1) {
          const release = deferred<void>();
          hold.add(release);
          await release.promise;
        }
        handled.push(ctx.eventId);
      }
    }
    const app = await startApp({ engine: 'postgres', providers: [Stuck], entities: [RunRow], logger: logs, sync: { prefetch: 4 } });
    return { app, consumer, handled };
  }

  it('never closes our channel: stuck runs time out and retry long before the broker would act', async () => {
    const logs = new LogCapture();
    const { app, consumer } = await start('500ms', logs);
    try {
      const ids = Array.from({ length: 6 }, () => unique('evt'));
      for (const id of ids) await broker.publishRaw(app.exchange, 'Item.Changed', envelope(id, { hang: true }));
      await waitFor(() => app.metrics.snapshot(consumer).handled === ids.length, { what: 'all stuck events handled on retry', timeoutMs: 30_000 });
      expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 6, retried: 6, deadLettered: 0 });
      expect(logs.matching(/acknowledgement .* timed out|Channel of .* failed/)).toEqual([]);
    } finally {
      await app.close();
    }
  });

  it('(control) without handlerTimeout, the same stuck run gets the channel closed by the broker', async () => {
    const logs = new LogCapture();
    const { app, consumer, handled } = await start(false, logs);
    try {
      const id = unique('evt');
      await broker.publishRaw(app.exchange, 'Item.Changed', envelope(id, { hang: true }));
      await waitFor(() => logs.matching(/acknowledgement .* timed out/).length > 0, { what: "the broker's consumer timeout", timeoutMs: 20_000 });
      for (const release of hold) release.resolve();
      // The released run commits; the copy redelivered on the reopened channel is a duplicate.
      await waitFor(() => handled.includes(id) && app.metrics.snapshot(consumer).duplicates + app.metrics.snapshot(consumer).handled >= 1, {
        what: 'the event settled after the channel reopened',
        timeoutMs: 20_000,
      });
    } finally {
      await app.close();
    }
  });
});
