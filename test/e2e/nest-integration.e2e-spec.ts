import {
  type ArgumentsHost,
  type CallHandler,
  type CanActivate,
  Catch,
  Controller,
  type ExceptionFilter,
  type ExecutionContext,
  type INestApplication,
  Injectable,
  type NestInterceptor,
  type PipeTransform,
  UseFilters,
  UseGuards,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { Ctx, EventPattern, Payload, RmqRecordBuilder } from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { lastValueFrom, type Observable, tap, throwError } from 'rxjs';
import { DataSource, EntityManager, In } from 'typeorm';
import {
  deadLetterQueueName,
  EventContext,
  NonRetryableError,
  OnEvent,
  retryQueueName,
  SYNC_HEADERS,
  SyncClient,
  SyncMetrics,
  SyncModule,
  SyncProcessedEvent,
  SyncPublisher,
  SyncServer,
} from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { typeOrmOptions } from '../support/databases.js';
import { AMQP_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';

interface Step {
  step: 'guard' | 'interceptor:before' | 'handler' | 'interceptor:after';
  eventId: string;
  type?: string;
  result?: unknown;
}

describe('Nest enhancers on @OnEvent handlers (PostgreSQL)', () => {
  let app: TestApp;
  let broker: Broker;
  let publisher: SyncPublisher;
  const enhancedConsumer = unique('Enhanced.onUserCreated');
  const deniedConsumer = unique('Denied.onUserBanned');
  const filteredConsumer = unique('Filtered.onUserFailed');
  const rpcFilteredConsumer = unique('RpcFiltered.onUserRejected');
  const steps: Step[] = [];
  const received: Array<{ user: unknown; ctx: unknown }> = [];
  const deniedRuns: string[] = [];
  const guardedEvents: string[] = [];
  const caught: Array<{ exception: unknown; type: string; ctx: unknown }> = [];
  const rpcCaught: unknown[] = [];

  const eventIdOf = (context: ExecutionContext) => context.switchToRpc().getContext<EventContext>().eventId;

  @Injectable()
  class TracingInterceptor implements NestInterceptor {
    intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
      const eventId = eventIdOf(context);
      steps.push({ step: 'interceptor:before', eventId, type: context.getType() });
      return next.handle().pipe(tap((result) => steps.push({ step: 'interceptor:after', eventId, result })));
    }
  }

  @Injectable()
  class TracingGuard implements CanActivate {
    canActivate(context: ExecutionContext): boolean {
      steps.push({ step: 'guard', eventId: eventIdOf(context), type: context.getType() });
      return true;
    }
  }

  @Injectable()
  class DenyingGuard implements CanActivate {
    canActivate(context: ExecutionContext): boolean {
      guardedEvents.push(eventIdOf(context));
      return false;
    }
  }

  class ShoutPipe implements PipeTransform<{ name: string }> {
    transform(value: { name: string }) {
      return { ...value, name: value.name.toUpperCase(), piped: true };
    }
  }

  @Catch()
  class RecordingFilter implements ExceptionFilter {
    catch(exception: unknown, host: ArgumentsHost): void {
      caught.push({ exception, type: host.getType(), ctx: host.switchToRpc().getContext() });
    }
  }

  /** Nest's RPC convention: a filter hands the error back as an erroring Observable. */
  @Catch()
  class RpcStyleFilter implements ExceptionFilter {
    catch(exception: unknown): Observable<never> {
      rpcCaught.push(exception);
      return throwError(() => exception);
    }
  }

  @Injectable()
  @UseGuards(TracingGuard)
  class Enhanced {
    @OnEvent('UserCreated', { consumer: enhancedConsumer, retry: false })
    async onUserCreated(@Payload(new ShoutPipe()) user: { name: string; piped: boolean }, @Ctx() ctx: EventContext) {
      steps.push({ step: 'handler', eventId: ctx.eventId });
      received.push({ user, ctx });
      return `handled ${user.name}`;
    }
  }

  @Injectable()
  @UseGuards(DenyingGuard)
  class Denied {
    @OnEvent('UserBanned', { consumer: deniedConsumer, retry: { attempts: 2, delays: [50] } })
    async onUserBanned(_user: unknown, ctx: EventContext) {
      deniedRuns.push(ctx.eventId);
    }
  }

  @Injectable()
  @UseFilters(RecordingFilter)
  class Filtered {
    @OnEvent('UserFailed', { consumer: filteredConsumer, retry: false })
    async onUserFailed(user: { name: string }) {
      throw new Error(`cannot project ${user.name}`);
    }
  }

  @Injectable()
  @UseFilters(RpcStyleFilter)
  class RpcFiltered {
    @OnEvent('UserRejected', { consumer: rpcFilteredConsumer })
    async onUserRejected(user: { name: string }) {
      throw new NonRetryableError(`rejected ${user.name}`);
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({
      engine: 'postgres',
      providers: [Enhanced, Denied, Filtered, RpcFiltered, TracingGuard, DenyingGuard, { provide: APP_INTERCEPTOR, useClass: TracingInterceptor }],
    });
    publisher = app.app.get(SyncPublisher);
  });

  afterAll(async () => {
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer: In([enhancedConsumer, deniedConsumer, filteredConsumer, rpcFilteredConsumer]) });
    await app.close();
    await broker.close();
  });

  it('runs the guard, then the global interceptor around the handler, with the pipe-transformed payload and the EventContext', async () => {
    const { eventId } = await publisher.publish('UserCreated', { name: 'alice' });
    await waitFor(() => app.metrics.snapshot(enhancedConsumer).handled === 1, { what: 'the enhanced handler to commit' });

    const trace = steps.filter((step) => step.eventId === eventId);
    expect(trace.map((step) => step.step)).toEqual(['guard', 'interceptor:before', 'handler', 'interceptor:after']);
    expect(trace.find((step) => step.step === 'interceptor:before')?.type).toBe('rpc');
    expect(trace.find((step) => step.step === 'guard')?.type).toBe('rpc');
    expect(trace.find((step) => step.step === 'interceptor:after')?.result).toBe('handled ALICE');

    expect(received).toHaveLength(1);
    const { user, ctx } = received[0];
    expect(user).toEqual({ name: 'ALICE', piped: true });
    expect(ctx).toBeInstanceOf(EventContext);
    expect(ctx).toMatchObject({ eventId, eventType: 'UserCreated', consumer: enhancedConsumer, attempt: 1 });
    expect((ctx as EventContext).manager).toBeInstanceOf(EntityManager);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: enhancedConsumer, eventId })).toBe(1);
  });

  it('never runs a handler whose guard denies it, and dead-letters the event after its attempts', async () => {
    const { eventId } = await publisher.publish('UserBanned', { name: 'mallory' });
    const [dead] = await broker.takeAll(deadLetterQueueName(app.queueOf(deniedConsumer)), 1);

    expect(JSON.parse(dead.content.toString())).toMatchObject({ eventId, eventType: 'UserBanned' });
    expect(dead.properties.headers).toMatchObject({
      [SYNC_HEADERS.reason]: 'exhausted',
      [SYNC_HEADERS.errorName]: 'ForbiddenException',
      [SYNC_HEADERS.attempts]: 2,
      [SYNC_HEADERS.consumer]: deniedConsumer,
    });
    expect(guardedEvents.filter((id) => id === eventId)).toHaveLength(2);
    expect(deniedRuns).toEqual([]);
    expect(steps.filter((step) => step.eventId === eventId)).toEqual([]);
    expect(app.metrics.snapshot(deniedConsumer)).toMatchObject({ handled: 0, retried: 1, deadLettered: 1 });
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: deniedConsumer, eventId })).toBe(0);
  });

  it('lets an exception filter see the handler error, which still fails the event', async () => {
    const { eventId } = await publisher.publish('UserFailed', { name: 'bob' });
    const [dead] = await broker.takeAll(deadLetterQueueName(app.queueOf(filteredConsumer)), 1);

    expect(caught).toHaveLength(1);
    expect(caught[0].exception).toBeInstanceOf(Error);
    expect((caught[0].exception as Error).message).toBe('cannot project bob');
    expect(caught[0].type).toBe('rpc');
    expect(caught[0].ctx).toBeInstanceOf(EventContext);
    expect((caught[0].ctx as EventContext).eventId).toBe(eventId);
    expect(dead.properties.headers).toMatchObject({ [SYNC_HEADERS.reason]: 'exhausted', [SYNC_HEADERS.errorMessage]: 'cannot project bob' });
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: filteredConsumer, eventId })).toBe(0);
  });

  it('fails the event when an exception filter returns the error as an Observable, as Nest RPC filters do', async () => {
    const { eventId } = await publisher.publish('UserRejected', { name: 'carol' });
    await waitFor(() => rpcCaught.length === 1, { what: 'the RPC-style filter to run' });
    await waitFor(() => {
      const counters = app.metrics.snapshot(rpcFilteredConsumer);
      return counters.handled + counters.deadLettered >= 1;
    }, { what: 'the event to be settled' });

    expect(app.metrics.snapshot(rpcFilteredConsumer)).toMatchObject({ handled: 0, deadLettered: 1 });
    const [dead] = await broker.takeAll(deadLetterQueueName(app.queueOf(rpcFilteredConsumer)), 1);
    expect(dead.properties.headers).toMatchObject({ [SYNC_HEADERS.reason]: 'non-retryable', [SYNC_HEADERS.errorName]: 'NonRetryableError' });
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer: rpcFilteredConsumer, eventId })).toBe(0);
  });
});

describe('@EventPattern controllers and the ClientProxy in a full Nest application (PostgreSQL)', () => {
  const renamedConsumer = unique('renamed');
  const created: Array<{ data: unknown; ctx: EventContext }> = [];
  const renamed: Array<{ data: unknown; ctx: EventContext }> = [];
  const audited: Array<{ data: unknown; ctx: EventContext }> = [];
  const eventIds: string[] = [];
  let broker: Broker;
  let full: FullApp;
  let app: INestApplication;

  // `<string>` selects EventPattern's plain-topic overload; the typed-topic one requires `...args: unknown[]` after the data.
  @Controller()
  class UsersController {
    @EventPattern<string>('UserCreated')
    onUserCreated(@Payload() data: unknown, @Ctx() ctx: EventContext) {
      created.push({ data, ctx });
    }

    @EventPattern<string>('UserRenamed', { consumer: renamedConsumer })
    onUserRenamed(@Payload() data: unknown, @Ctx() ctx: EventContext) {
      renamed.push({ data, ctx });
    }
  }

  /** A second method on the same pattern: Nest chains it behind the first, and both serve the one consumer. */
  @Controller()
  class AuditController {
    @EventPattern<string>('UserCreated')
    onUserCreated(@Payload() data: unknown, @Ctx() ctx: EventContext) {
      audited.push({ data, ctx });
    }
  }

  interface FullApp {
    app: INestApplication;
    service: string;
    close(): Promise<void>;
  }

  /** A whole Nest application (HTTP adapter included) with SyncServer connected as its microservice. */
  async function createFullApp(): Promise<FullApp> {
    const service = unique('svc');
    const exchange = unique('ex');
    const moduleRef = await Test.createTestingModule({
      imports: [TypeOrmModule.forRoot(typeOrmOptions('postgres', []).options), SyncModule.forRoot({ service, exchange, url: AMQP_URL, retry: false })],
      controllers: [UsersController, AuditController],
    }).compile();
    const nestApp = moduleRef.createNestApplication({ logger: process.env.SYNC_TEST_LOGS ? ['log', 'warn', 'error', 'debug'] : ['error'] });
    nestApp.connectMicroservice({ strategy: nestApp.get(SyncServer) });
    return {
      app: nestApp,
      service,
      async close() {
        const server = nestApp.get(SyncServer);
        const queues = new Set([`${service}.UserCreated`, `${service}.${renamedConsumer}`, ...server.registered.map((definition) => definition.queue)]);
        const retryQueues = server.registered.flatMap((definition) => definition.retry.delaysMs.map((delay) => retryQueueName(definition.queue, delay)));
        await nestApp.get(DataSource).getRepository(SyncProcessedEvent).delete({ eventId: In(eventIds) });
        await nestApp.close();
        await broker.deleteQueues(...[...queues].flatMap((queue) => [queue, deadLetterQueueName(queue)]), ...retryQueues);
        await broker.deleteExchange(exchange);
      },
    };
  }

  /** Whether a queue exists, probed on a throwaway channel (a missing queue closes the channel). */
  async function queueExists(queue: string): Promise<boolean> {
    const probe = await broker.connection.createChannel();
    probe.on('error', () => undefined);
    try {
      await probe.checkQueue(queue);
      return true;
    } catch {
      return false;
    } finally {
      await probe.close().catch(() => undefined);
    }
  }

  const createdRun = (eventId: string) => waitFor(() => created.find((run) => run.ctx.eventId === eventId), { what: `the @EventPattern handler to get ${eventId}` });

  beforeAll(async () => {
    broker = await Broker.connect();
    full = await createFullApp();
    app = full.app;
    await app.init();
    await app.startAllMicroservices();
  });

  afterAll(async () => {
    await full?.close();
    await broker.close();
  });

  it('serves @EventPattern methods from <service>.<pattern>, or <service>.<consumer> when the extras name one', async () => {
    expect(await queueExists(`${full.service}.UserCreated`)).toBe(true);
    expect(await queueExists(`${full.service}.${renamedConsumer}`)).toBe(true);
    expect(await queueExists(`${full.service}.UserRenamed`)).toBe(false);
    expect(app.get(SyncServer).registered.map((definition) => definition.consumer)).toEqual(expect.arrayContaining(['UserCreated', renamedConsumer]));
  });

  it('hands the controller method the data and an EventContext with the transaction manager', async () => {
    const envelope = await app.get(SyncPublisher).publish('UserCreated', { id: 'u1', name: 'Alice' });
    eventIds.push(envelope.eventId);
    const { data, ctx } = await createdRun(envelope.eventId);

    expect(data).toEqual({ id: 'u1', name: 'Alice' });
    expect(ctx).toBeInstanceOf(EventContext);
    expect(ctx).toMatchObject({ eventType: 'UserCreated', source: full.service, consumer: 'UserCreated', attempt: 1 });
    expect(ctx.manager).toBeInstanceOf(EntityManager);
    await waitFor(async () => (await app.get(DataSource).getRepository(SyncProcessedEvent).countBy({ consumer: 'UserCreated', eventId: envelope.eventId })) === 1, {
      what: 'the dedupe row of the @EventPattern handler',
    });
  });

  it('runs every method on one pattern, in the one consumer and its transaction', async () => {
    const handledBefore = app.get(SyncMetrics).snapshot('UserCreated').handled;
    const envelope = await app.get(SyncPublisher).publish('UserCreated', { id: 'u6', name: 'Fay' });
    eventIds.push(envelope.eventId);
    const first = await createdRun(envelope.eventId);
    const second = await waitFor(() => audited.find((run) => run.ctx.eventId === envelope.eventId), { what: 'the chained @EventPattern method' });

    await waitFor(() => app.get(SyncMetrics).snapshot('UserCreated').handled >= handledBefore + 1, { what: 'the event to commit' });

    expect(second.data).toEqual({ id: 'u6', name: 'Fay' });
    expect(second.ctx).toBe(first.ctx);
    expect(created.filter((run) => run.ctx.eventId === envelope.eventId)).toHaveLength(1);
    expect(audited.filter((run) => run.ctx.eventId === envelope.eventId)).toHaveLength(1);
    expect(app.get(SyncServer).registered.filter((definition) => definition.eventTypes.includes('UserCreated'))).toHaveLength(1);
  });

  it('delivers an event to the extras-named consumer', async () => {
    const envelope = await app.get(SyncPublisher).publish('UserRenamed', { id: 'u1', name: 'Alicia' });
    eventIds.push(envelope.eventId);
    const { data, ctx } = await waitFor(() => renamed.find((run) => run.ctx.eventId === envelope.eventId), { what: 'the renamed handler' });

    expect(data).toEqual({ id: 'u1', name: 'Alicia' });
    expect(ctx).toMatchObject({ consumer: renamedConsumer, eventType: 'UserRenamed' });
    await waitFor(() => app.get(SyncMetrics).snapshot(renamedConsumer).handled === 1, { what: 'the renamed event to commit' });
  });

  it('publishes through ClientProxy.emit: fire-and-forget reaches the handler, and the awaited emit resolves once confirmed', async () => {
    const client = app.get(SyncClient);
    const metrics = app.get(SyncMetrics);

    client.emit('UserCreated', { id: 'u2', name: 'Bob' });
    const fired = await waitFor(() => created.find((run) => (run.data as { id: string }).id === 'u2'), { what: 'the fire-and-forget emit' });
    eventIds.push(fired.ctx.eventId);

    const publishedBefore = metrics.snapshot().published;
    const envelope = await lastValueFrom(client.emit('UserCreated', { id: 'u3', name: 'Carol' }));
    expect(metrics.snapshot().published).toBe(publishedBefore + 1);
    expect(envelope).toMatchObject({ eventType: 'UserCreated', source: full.service, data: { id: 'u3', name: 'Carol' } });
    eventIds.push(envelope.eventId);

    const { ctx } = await createdRun(envelope.eventId);
    expect(ctx).toMatchObject({ source: full.service, eventType: 'UserCreated' });
  });

  it('takes the event id and headers of an emitted RmqRecord from its messageId and headers', async () => {
    const eventId = unique('record');
    eventIds.push(eventId);
    const record = new RmqRecordBuilder({ id: 'u5', name: 'Eve' }).setOptions({ messageId: eventId, headers: { tenant: 't-1' } }).build();
    const envelope = await lastValueFrom(app.get(SyncClient).emit('UserCreated', record));

    expect(envelope).toMatchObject({ eventId, eventType: 'UserCreated', data: { id: 'u5', name: 'Eve' } });
    const { data, ctx } = await createdRun(eventId);
    expect(data).toEqual({ id: 'u5', name: 'Eve' });
    expect(ctx.headers).toMatchObject({ tenant: 't-1' });
  });

  it('starts in the order Nest documents for hybrid apps: startAllMicroservices() before init()', async () => {
    const documented = await createFullApp();
    try {
      await documented.app.startAllMicroservices();
      await documented.app.init();
      const envelope = await documented.app.get(SyncPublisher).publish('UserCreated', { id: 'u4', name: 'Dan' });
      eventIds.push(envelope.eventId);
      const { ctx } = await createdRun(envelope.eventId);
      expect(ctx).toMatchObject({ source: documented.service, consumer: 'UserCreated' });
    } finally {
      await documented.close();
    }
  });
});
