import { Injectable } from '@nestjs/common';
import { EventContext, OnEvent, SyncProcessedEvent } from '../../lib/index.js';
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
    async onPing(_data: unknown, ctx: EventContext) {
      seen.push(ctx.eventId);
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

  const ping = (eventId: string) =>
    broker.publishRaw(app.exchange, 'Ping', JSON.stringify({ eventId, eventType: 'Ping', data: {}, timestamp: new Date().toISOString(), source: 'test' }));

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
});
