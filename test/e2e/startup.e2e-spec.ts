import { Injectable, type LoggerService, type OnModuleInit, type Provider } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import type { AmqpConnectionManager } from 'amqp-connection-manager';
import {
  BrokerUnavailableError,
  EventContext,
  OnEvent,
  SyncModule,
  SyncProcessedEvent,
  SyncServer,
  TopologyMismatchError,
  type SyncModuleOptions,
} from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { startBroker, stopBroker } from '../support/broker-control.js';
import { typeOrmOptions } from '../support/databases.js';
import { track } from '../support/deferred.js';
import { LogCapture } from '../support/log-capture.js';
import { AMQP_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';

/** A module the test initialises itself, so it can close it after `init()` rejected. */
async function compile(sync: Partial<SyncModuleOptions>, providers: Provider[] = [], logger?: LoggerService): Promise<{ moduleRef: TestingModule; dispose(): Promise<void> }> {
  const typeorm = typeOrmOptions('sqlite', []);
  const moduleRef = await Test.createTestingModule({
    imports: [TypeOrmModule.forRoot(typeorm.options), SyncModule.forRoot({ service: unique('svc'), exchange: unique('ex'), url: AMQP_URL, ...sync })],
    providers,
  }).compile();
  moduleRef.useLogger(logger ?? (process.env.SYNC_TEST_LOGS ? ['log', 'warn', 'error', 'debug'] : false));
  return {
    moduleRef,
    async dispose() {
      await moduleRef.close();
      typeorm.cleanup();
    },
  };
}

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

describe('application startup', () => {
  describe('while the broker is stopped', () => {
    const consumer = unique('StartupProjection.onPing');
    const runs: EventContext[] = [];
    let server: SyncServer | undefined;
    let app: TestApp | undefined;

    @Injectable()
    class StartupProjection {
      @OnEvent('Ping', { consumer })
      async onPing(_data: unknown, ctx: EventContext) {
        runs.push(ctx);
      }
    }

    /** Hands the test the server while bootstrap is still waiting for the broker. */
    @Injectable()
    class ServerProbe implements OnModuleInit {
      constructor(private readonly syncServer: SyncServer) {}
      onModuleInit() {
        server = this.syncServer;
      }
    }

    afterAll(async () => {
      await startBroker();
      await app?.close();
    });

    it('does not fail: bootstrap completes once the broker is started, then it consumes', async () => {
      let starting!: ReturnType<typeof track<TestApp>>;
      try {
        await stopBroker();
        starting = track(startApp({ engine: 'sqlite', providers: [StartupProjection, ServerProbe], sync: { reconnectDelay: '200ms', retry: false } }));
        const connection = await waitFor(
          () => {
            if (starting.settled) throw new Error('startApp settled while the broker was stopped');
            return server?.unwrap<AmqpConnectionManager>();
          },
          { what: 'bootstrap to try to reach the broker' },
        );
        expect(connection.isConnected()).toBe(false);
        expect(starting.settled).toBe(false);
      } finally {
        await startBroker();
      }

      app = await starting.promise;
      const queue = app.queueOf(consumer);
      const eventId = unique('ping');
      const broker = await Broker.connect();
      try {
        expect((await broker.channel.checkQueue(queue)).consumerCount).toBe(1);
        await broker.publishRaw(app.exchange, 'Ping', JSON.stringify({ eventId, eventType: 'Ping', data: {}, timestamp: new Date().toISOString() }));
      } finally {
        await broker.close();
      }
      await waitFor(() => runs.find((ctx) => ctx.eventId === eventId), { what: 'the event consumed after a late broker' });
      expect(runs).toHaveLength(1);
      expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer, eventId })).toBe(1);
    });
  });

  it('fails with BrokerUnavailableError after startupTimeout, naming the url without its password', async () => {
    const { moduleRef, dispose } = await compile({ url: 'amqp://guest:guest@127.0.0.1:5999', startupTimeout: '1s', reconnectDelay: '200ms' });
    try {
      const began = Date.now();
      const error = await rejectionOf(moduleRef.init());
      expect(Date.now() - began).toBeLessThan(10_000);
      expect(error).toBeInstanceOf(BrokerUnavailableError);
      expect((error as Error).name).toBe('BrokerUnavailableError');
      expect((error as Error).message).toContain('127.0.0.1:5999');
      expect((error as Error).message).not.toContain(':guest@');
    } finally {
      await dispose();
    }
  });

  describe('when a handler queue exists with other arguments', () => {
    const consumer = unique('MismatchProjection.onPing');
    const service = unique('svc');
    const exchange = unique('ex');
    const queue = `${service}.${consumer}`;
    const operatorConsumer = unique('OperatorQueue.onPing');
    const operatorQueue = `${service}.${operatorConsumer}`;
    const runs: string[] = [];

    @Injectable()
    class MismatchProjection {
      @OnEvent('Ping', { consumer })
      async onPing(_data: unknown, ctx: EventContext) {
        runs.push(ctx.eventId);
      }
    }

    afterAll(async () => {
      const broker = await Broker.connect();
      await broker.deleteQueues(queue, operatorQueue);
      await broker.deleteExchange(exchange);
      await broker.close();
    });

    it('fails with TopologyMismatchError naming the queue and the argument', async () => {
      const broker = await Broker.connect();
      try {
        await broker.channel.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
      } finally {
        await broker.close();
      }
      const { moduleRef, dispose } = await compile({ service, exchange, reconnectDelay: '200ms', retry: false }, [MismatchProjection]);
      try {
        const error = await rejectionOf(moduleRef.init());
        expect(error).toBeInstanceOf(TopologyMismatchError);
        expect(error).toMatchObject({ name: 'TopologyMismatchError', kind: 'queue', entity: queue, argument: 'x-queue-type' });
        expect((error as Error).message).toContain(`"${queue}"`);
        expect((error as Error).message).toContain('x-queue-type');
      } finally {
        await dispose();
      }
      expect(runs).toHaveLength(0);
    });

    it('fails on an argument RabbitMQ checks after the mode, with no warning that the queue keeps its mode', async () => {
      // RabbitMQ reports the mode first here: the queue has none where this service declares lazy
      // ones, and also single active consumer, which this service does not declare.
      const broker = await Broker.connect();
      try {
        await broker.channel.assertQueue(operatorQueue, { durable: true, arguments: { 'x-single-active-consumer': true } });
      } finally {
        await broker.close();
      }
      const logs = new LogCapture();
      @Injectable()
      class OperatorProjection {
        @OnEvent('Ping', { consumer: operatorConsumer })
        async onPing(_data: unknown, ctx: EventContext) {
          runs.push(ctx.eventId);
        }
      }
      const { moduleRef, dispose } = await compile({ service, exchange, reconnectDelay: '200ms', retry: false }, [OperatorProjection], logs);
      try {
        const error = await rejectionOf(moduleRef.init());
        expect(error).toMatchObject({ name: 'TopologyMismatchError', kind: 'queue', entity: operatorQueue, argument: 'x-single-active-consumer' });
        expect(logs.matching(/already exists in/)).toEqual([]);
      } finally {
        await dispose();
      }
      expect(runs).toHaveLength(0);
    });
  });
});
