import { Injectable } from '@nestjs/common';
import { deadLetterQueueName, EventContext, NonRetryableError, OnEvent, retryQueueName, SyncProcessedEvent } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { unique, waitFor } from '../support/wait.js';

describe('a consumer whose queue is deleted under it (SQLite)', () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Recovery.onPing');
  const retrying = unique('Recovery.onRetried');
  const seen: string[] = [];
  const attempts: string[] = [];

  @Injectable()
  class Recovery {
    @OnEvent('Ping', { consumer, retry: false })
    async onPing(data: { reject?: boolean }, ctx: EventContext) {
      seen.push(ctx.eventId);
      if (data.reject) throw new NonRetryableError('rejected on purpose');
    }

    @OnEvent('Retried', { consumer: retrying, retry: { attempts: 2, delays: [50] } })
    async onRetried(_data: unknown, ctx: EventContext) {
      attempts.push(`${ctx.eventId}#${ctx.attempt}`);
      if (ctx.attempt === 1) throw new Error('first run fails');
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'sqlite', providers: [Recovery], sync: { reconnectDelay: 200 } });
  });

  afterAll(async () => {
    await app.close();
    await broker.close();
  });

  const ping = (eventId: string, data: object = {}) =>
    broker.publishRaw(app.exchange, 'Ping', JSON.stringify({ eventId, eventType: 'Ping', data, timestamp: new Date().toISOString(), source: 'test' }));

  it('declares the queue again, re-binds it, and consumes the next event', async () => {
    await ping('before');
    await waitFor(() => seen.includes('before'), { what: 'the first event' });

    await broker.deleteQueues(app.queueOf(consumer));
    // The queue and its binding come back on their own; wait until a published event is routed again.
    await waitFor(
      async () => {
        await ping('after');
        return seen.includes('after');
      },
      { what: 'the event after the queue was deleted', intervalMs: 300 },
    );
    expect(seen.filter((id) => id === 'after')).toHaveLength(1);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(2);
  });

  it('never loses a dead letter whose DLQ was deleted: it is requeued, the DLQ declared again, then dead-lettered', async () => {
    const dlq = deadLetterQueueName(app.queueOf(consumer));
    await broker.deleteQueues(dlq);
    await ping('doomed', { reject: true });
    const [letter] = await broker.takeAll(dlq, 1);
    expect(JSON.parse(letter.content.toString()).eventId).toBe('doomed');
    expect(letter.properties.headers?.['sync-reason']).toBe('non-retryable');
    expect(seen.filter((id) => id === 'doomed').length).toBeGreaterThanOrEqual(2);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer, eventId: 'doomed' })).toBe(0);
  });

  it('never loses a retry whose tier was deleted: it is requeued, the tier declared again, then retried', async () => {
    const queue = app.queueOf(retrying);
    await broker.deleteQueues(retryQueueName(queue, 50));
    await broker.publishRaw(app.exchange, 'Retried', JSON.stringify({ eventId: 'tierless', eventType: 'Retried', data: {}, timestamp: new Date().toISOString(), source: 'test' }));

    await waitFor(() => app.metrics.snapshot(retrying).handled >= 1, { what: 'the retry handled after its tier came back' });
    expect(attempts.filter((run) => run === 'tierless#1').length).toBeGreaterThanOrEqual(2);
    expect(attempts.filter((run) => run === 'tierless#2')).toHaveLength(1);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: retrying, eventId: 'tierless' })).toBe(1);
    expect(await broker.messageCount(retryQueueName(queue, 50))).toBe(0);
    expect(await broker.messageCount(deadLetterQueueName(queue))).toBe(0);
  });
});
