import { Injectable } from '@nestjs/common';
import { deadLetterQueueName, OnEvent, partitionQueueName, retryQueueName, SyncProcessedEvent, SyncPublisher } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { listQueues } from '../support/broker-control.js';
import { LogCapture } from '../support/log-capture.js';
import { unique, waitFor } from '../support/wait.js';

/** The x-queue-mode of every queue whose name starts with `prefix`, as RabbitMQ holds it ('none' when it has none). */
async function queueModes(prefix: string): Promise<Map<string, string>> {
  return new Map([...(await listQueues(prefix, 'arguments'))].map(([name, [args]]) => [name, /"x-queue-mode","([^"]*)"/.exec(args)?.[1] ?? 'none']));
}

function handler(consumer: string, runs: string[], options: { partitions?: number } = {}) {
  @Injectable()
  class Projection {
    @OnEvent('ModeProbe', { consumer, retry: { attempts: 2, delays: [100] }, ...options })
    async onProbe(data: { n: number }) {
      runs.push(String(data.n));
    }
  }
  return Projection;
}

/** Declares queues as an earlier version or an operator would have, before the service starts. */
async function declareBefore(...queues: Array<[string, Record<string, unknown>]>): Promise<void> {
  const broker = await Broker.connect();
  try {
    for (const [queue, args] of queues) await broker.channel.assertQueue(queue, { durable: true, arguments: args });
  } finally {
    await broker.close();
  }
}

async function publishProbes(app: TestApp, count: number): Promise<void> {
  const publisher = app.app.get(SyncPublisher);
  for (let n = 1; n <= count; n++) await publisher.publish('ModeProbe', { n }, { key: `k${n}` });
}

describe('queueMode (PostgreSQL)', () => {
  let app: TestApp | undefined;

  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it("declares a handler's queue, retry tier and DLQ lazy by default, and events flow through them", async () => {
    const consumer = unique('Lazy.onProbe');
    const runs: string[] = [];
    app = await startApp({ engine: 'postgres', providers: [handler(consumer, runs)] });
    const queue = app.queueOf(consumer);

    const modes = await queueModes(queue);
    expect(modes.get(queue)).toBe('lazy');
    expect(modes.get(retryQueueName(queue, 100))).toBe('lazy');
    expect(modes.get(deadLetterQueueName(queue))).toBe('lazy');

    await publishProbes(app, 5);
    await waitFor(() => runs.length === 5, { what: 'five handled events' });
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(5);
  });

  it("declares them in RabbitMQ's default mode with queueMode: 'default'", async () => {
    const consumer = unique('Default.onProbe');
    app = await startApp({ engine: 'postgres', providers: [handler(consumer, [])], sync: { queueMode: 'default' } });
    const queue = app.queueOf(consumer);

    const modes = await queueModes(queue);
    expect(modes.get(queue)).toBe('none');
    expect(modes.get(retryQueueName(queue, 100))).toBe('none');
    expect(modes.get(deadLetterQueueName(queue))).toBe('none');
  });

  it('consumes queues that already exist in another mode: they keep it, a warning says so once each, and every event is handled', async () => {
    const service = unique('svc');
    const consumer = unique('Kept.onProbe');
    const queue = `${service}.${consumer}`;
    await declareBefore([queue, {}], [deadLetterQueueName(queue), { 'x-queue-mode': 'default' }]);
    const logs = new LogCapture();
    const runs: string[] = [];
    app = await startApp({ engine: 'postgres', service, providers: [handler(consumer, runs)], logger: logs });

    const modes = await queueModes(queue);
    expect(modes.get(queue)).toBe('none');
    expect(modes.get(deadLetterQueueName(queue))).toBe('default');
    expect(modes.get(retryQueueName(queue, 100))).toBe('lazy');
    expect(logs.matching(new RegExp(`Queue "${queue}" already exists in RabbitMQ's default mode`))).toHaveLength(1);
    expect(logs.matching(new RegExp(`Queue "${deadLetterQueueName(queue)}" already exists in mode 'default'`))).toHaveLength(1);
    expect(logs.matching(/PRECONDITION|TopologyMismatchError/)).toEqual([]);

    await publishProbes(app, 5);
    await waitFor(() => runs.length === 5, { what: 'five handled events' });
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(5);
  });

  it('does the same for the partition queues of a partitioned handler', async () => {
    const service = unique('svc');
    const consumer = unique('KeptParts.onProbe');
    const queue = `${service}.${consumer}`;
    await declareBefore([partitionQueueName(queue, 0), {}]);
    const logs = new LogCapture();
    const runs: string[] = [];
    app = await startApp({ engine: 'postgres', service, providers: [handler(consumer, runs, { partitions: 2 })], logger: logs });

    const modes = await queueModes(queue);
    expect(modes.get(partitionQueueName(queue, 0))).toBe('none');
    expect(modes.get(partitionQueueName(queue, 1))).toBe('lazy');
    expect(modes.get(deadLetterQueueName(queue))).toBe('lazy');
    expect(logs.matching(new RegExp(`Queue "${partitionQueueName(queue, 0)}" already exists`))).toHaveLength(1);

    await publishProbes(app, 8);
    await waitFor(() => runs.length === 8, { what: 'eight handled events' });
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(8);
  });
});
