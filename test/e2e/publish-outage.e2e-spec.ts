import { Injectable } from '@nestjs/common';
import type { AmqpConnectionManager } from 'amqp-connection-manager';
import { EventContext, OnEvent, PublishTimeoutError, SyncClient, SyncPublisher } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { startBroker, stopBroker, withBrokerStopped } from '../support/broker-control.js';
import { track } from '../support/deferred.js';
import { unique, waitFor } from '../support/wait.js';

/** Waits until the app's publishing connection has seen the broker go away. */
async function publisherDisconnected(app: TestApp): Promise<void> {
  const manager = app.app.get(SyncClient).unwrap<AmqpConnectionManager>();
  await waitFor(() => !manager.isConnected(), { what: 'the publisher to notice the outage' });
}

describe('publishing while the broker is down', () => {
  describe('with the default publishTimeout', () => {
    const consumer = unique('OutageProjection.onOrder');
    const runs: EventContext[] = [];
    let publisherApp: TestApp;
    let consumerApp: TestApp;

    @Injectable()
    class OutageProjection {
      @OnEvent('OrderPlaced', { consumer })
      async onOrder(_data: { orderId: string }, ctx: EventContext) {
        runs.push(ctx);
      }
    }

    beforeAll(async () => {
      consumerApp = await startApp({ engine: 'sqlite', providers: [OutageProjection], sync: { reconnectDelay: '200ms', retry: false } });
      publisherApp = await startApp({ engine: 'sqlite', exchange: consumerApp.exchange, sync: { reconnectDelay: '200ms', publishTimeout: '60s' } });
    });

    afterAll(async () => {
      await startBroker();
      await publisherApp?.close();
      await consumerApp?.close();
    });

    it('waits for the broker and resolves with the envelope once it has confirmed it', async () => {
      const orderId = unique('order');
      let published!: ReturnType<typeof track<unknown>>;
      try {
        await stopBroker();
        await publisherDisconnected(publisherApp);
        published = track(publisherApp.app.get(SyncPublisher).publish('OrderPlaced', { orderId }, { key: orderId }));
        await waitFor(() => publisherApp.app.get(SyncClient).pendingPublishes === 1, { what: 'the publish to wait for the broker' });
        expect(published.settled).toBe(false);
        expect(publisherApp.metrics.snapshot()).toMatchObject({ published: 0, publishFailed: 0 });
      } finally {
        await startBroker();
      }

      const envelope = (await published.promise) as Awaited<ReturnType<SyncPublisher['publish']>>;
      expect(envelope).toMatchObject({ eventType: 'OrderPlaced', data: { orderId }, key: orderId, source: publisherApp.service });
      expect(publisherApp.metrics.snapshot()).toMatchObject({ published: 1, publishFailed: 0 });

      await waitFor(() => runs.find((ctx) => ctx.eventId === envelope.eventId), { timeoutMs: 30_000, what: 'the consumer app to receive the event' });
      expect(runs.filter((ctx) => ctx.eventId === envelope.eventId)).toHaveLength(1);
      expect(runs.find((ctx) => ctx.eventId === envelope.eventId)).toMatchObject({ source: publisherApp.service, key: orderId, attempt: 1 });
    });
  });

  describe('with a short publishTimeout', () => {
    let app: TestApp;

    beforeAll(async () => {
      app = await startApp({ engine: 'sqlite', sync: { reconnectDelay: '200ms', publishTimeout: '1s' } });
    });

    afterAll(async () => {
      await startBroker();
      await app?.close();
    });

    it('rejects with PublishTimeoutError and counts the failure', async () => {
      const failure = await withBrokerStopped(async () => {
        await publisherDisconnected(app);
        return app.app.get(SyncPublisher).publish('OrderPlaced', { orderId: unique('order') }).then(
          () => undefined,
          (error: unknown) => error,
        );
      });
      expect(failure).toBeInstanceOf(PublishTimeoutError);
      expect((failure as Error).name).toBe('PublishTimeoutError');
      expect((failure as Error).message).toContain('OrderPlaced');
      expect(app.metrics.snapshot()).toMatchObject({ published: 0, publishFailed: 1 });
      expect(app.app.get(SyncClient).pendingPublishes).toBe(0);
    });
  });
});
