import { Injectable } from '@nestjs/common';
import { deadLetterQueueName, EventContext, NonRetryableError, OnEvent, SyncProcessedEvent } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { unique, waitFor } from '../support/wait.js';

describe('a consumer whose queue is deleted under it (SQLite)', () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Recovery.onPing');
  const seen: string[] = [];

  @Injectable()
  class Recovery {
    @OnEvent('Ping', { consumer, retry: false })
    async onPing(data: { reject?: boolean }, ctx: EventContext) {
      seen.push(ctx.eventId);
      if (data.reject) throw new NonRetryableError('rejected on purpose');
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
});
