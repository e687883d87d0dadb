import { Injectable } from '@nestjs/common';
import { deadLetterQueueName, EventContext, OnEvent, retryQueueName, SyncProcessedEvent } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { listQueues } from '../support/broker-control.js';
import { unique, waitFor } from '../support/wait.js';

/** The type of every queue whose name starts with `prefix`. */
async function queueTypes(prefix: string): Promise<Map<string, string>> {
  return new Map([...(await listQueues(prefix, 'type'))].map(([name, [type]]) => [name, type.trim()]));
}

describe("queueType: 'quorum' (SQLite)", () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Quorum.onPing');
  const attempts: number[] = [];

  @Injectable()
  class Quorum {
    @OnEvent('Ping', { consumer, retry: { attempts: 2, delays: [100] } })
    async onPing(_data: unknown, ctx: EventContext) {
      attempts.push(ctx.attempt);
      if (ctx.attempt === 1) throw new Error('first run fails');
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'sqlite', providers: [Quorum], sync: { queueType: 'quorum' } });
  });

  afterAll(async () => {
    await app.close();
    await broker.close();
  });

  it('declares the handler queue, its retry tier and its DLQ as quorum queues', async () => {
    const queue = app.queueOf(consumer);
    const types = await queueTypes(queue);
    expect(types.get(queue)).toBe('quorum');
    expect(types.get(retryQueueName(queue, 100))).toBe('quorum');
    expect(types.get(deadLetterQueueName(queue))).toBe('quorum');
  });

  it('retries through the quorum TTL tier back to the handler queue', async () => {
    await broker.publishRaw(app.exchange, 'Ping', JSON.stringify({ eventId: 'q-1', eventType: 'Ping', data: {}, timestamp: new Date().toISOString(), source: 'test' }));
    await waitFor(() => attempts.includes(2), { what: 'the retried run' });
    expect(attempts).toEqual([1, 2]);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer, eventId: 'q-1' })).toBe(1);
    expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 1, retried: 1, deadLettered: 0 });
  });
});
