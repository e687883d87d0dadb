import { Injectable } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { Column, DataSource, type DataSourceOptions, Entity, In, IsNull, PrimaryColumn } from 'typeorm';
import {
  CommitRolledBackError,
  type EventContext,
  EventTooLargeError,
  OnEvent,
  OutboxTableMissingError,
  OutboxUnavailableError,
  PublishesEvent,
  SyncOutbox,
  SyncOutboxMessage,
  SyncModule,
  SyncProcessedEvent,
  SyncPublisher,
} from '../../lib/index.js';
import { SyncLifecycle } from '../../lib/sync.lifecycle.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { ENGINES, typeOrmOptions } from '../support/databases.js';
import { AMQP_URL } from '../support/env.js';
import { unique, waitFor } from '../support/wait.js';

@Entity('test_outbox_accounts')
class Account {
  @PrimaryColumn({ type: 'varchar', length: 100 }) id!: string;
  @Column({ type: 'varchar', length: 100 }) name!: string;
}

interface Seen {
  eventId: string;
  data: { id: string };
  causationId?: string;
  key?: string;
}

describe.each(ENGINES)('transactional outbox on %s', (engine) => {
  const created: Seen[] = [];
  const opened: Seen[] = [];
  const createdRuns: EventContext[] = [];
  const userCreated = unique('Outbox.onUserCreated');
  let app: TestApp;
  let publisher: SyncPublisher;
  let users: UsersService;
  let broker: Broker;

  @Injectable()
  class UsersService {
    constructor(readonly publisher: SyncPublisher) {}

    @PublishesEvent('UserCreated', { key: (account: Account) => account.id })
    async create(id: string): Promise<Account> {
      return { id, name: `name of ${id}` };
    }

    @PublishesEvent('UserRenamed')
    renameSync(id: string): { id: string } {
      return { id };
    }
  }

  @Injectable()
  class Projection {
    constructor(private readonly publisher: SyncPublisher) {}

    @OnEvent('UserCreated', { consumer: userCreated, retry: { attempts: 3, delays: ['50ms'] } })
    async onUserCreated(data: { id: string; failAfterPublishing?: boolean }, ctx: EventContext) {
      createdRuns.push(ctx);
      created.push({ eventId: ctx.eventId, data, key: ctx.key });
      await this.publisher.publish('CustomerOpened', { id: data.id }, { causationId: ctx.eventId });
      if (data.failAfterPublishing && ctx.attempt === 1) throw new Error('fails after publishing');
    }

    @OnEvent('CustomerOpened', { consumer: unique('Outbox.onCustomerOpened') })
    async onCustomerOpened(data: { id: string }, ctx: EventContext) {
      opened.push({ eventId: ctx.eventId, data, causationId: ctx.causationId });
    }
  }

  const rowsOf = (eventIds: string[]) => app.dataSource.getRepository(SyncOutboxMessage).findBy({ source: app.service, eventId: In(eventIds) });
  const rowsKeyed = (keys: string[]) => app.dataSource.getRepository(SyncOutboxMessage).findBy({ source: app.service, key: In(keys) });
  const createdFor = (id: string) => created.filter((seen) => seen.data.id === id);
  const openedFor = (id: string) => opened.filter((seen) => seen.data.id === id);

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine, providers: [UsersService, Projection], entities: [Account], sync: { outbox: { pollInterval: '100ms' } } });
    publisher = app.app.get(SyncPublisher);
    users = app.app.get(UsersService);
  });

  afterAll(async () => {
    await app?.close();
    await broker?.close();
  });

  it('publishes nothing for a transaction that rolls back, and exactly one event for one that commits', async () => {
    const rolledBack = unique('u-rolled-back');
    const committed = unique('u-committed');
    const failure = publisher.transaction(async (manager) => {
      await manager.insert(Account, { id: rolledBack, name: 'never' });
      await users.create(rolledBack);
      throw new Error('business rule broken');
    });
    await expect(failure).rejects.toThrow('business rule broken');

    const account = await publisher.transaction(async (manager) => {
      await manager.insert(Account, { id: committed, name: 'kept' });
      return users.create(committed);
    });
    expect(account.id).toBe(committed);

    // Events leave in write order through one relay and one consumer: once the later one is handled, an earlier one would have been.
    await waitFor(() => createdFor(committed).length === 1, { what: 'the committed event' });
    await waitFor(async () => (await rowsKeyed([committed]))[0]?.publishedAt, { what: 'the row marked published' });
    const [row] = await rowsKeyed([committed]);
    expect(row).toMatchObject({ eventType: 'UserCreated', routingKey: 'UserCreated', key: committed, attempts: 1, lastError: null });
    expect(JSON.parse(row.payload)).toMatchObject({ eventId: row.eventId, eventType: 'UserCreated', data: { id: committed }, source: app.service, key: committed });
    expect(createdFor(committed)[0]).toMatchObject({ eventId: row.eventId, key: committed });

    expect(createdFor(rolledBack)).toEqual([]);
    expect(await rowsKeyed([rolledBack])).toEqual([]);
    expect(await app.dataSource.getRepository(Account).countBy({ id: In([rolledBack, committed]) })).toBe(1);
    expect(app.metrics.snapshot()).toMatchObject({ outboxRelayFailed: 0 });
  });

  it('writes SyncPublisher.publish and sync @PublishesEvent methods called anywhere inside the transaction, found without passing the manager', async () => {
    const id = unique('u-nested');
    const envelope = await publisher.transaction(async () => {
      users.renameSync(id); // returns at once; its outbox write must still land before the commit
      const deep = async () => {
        await Promise.resolve();
        return publisher.publish('UserCreated', { id }, { key: id, correlationId: 'corr-1' });
      };
      // A nested transaction joins the outer one.
      return publisher.transaction(deep);
    });
    const rows = await app.dataSource.getRepository(SyncOutboxMessage).findBy({ source: app.service, key: id });
    expect(rows.map((row) => row.eventId)).toEqual([envelope.eventId]);
    const renamed = await app.dataSource.getRepository(SyncOutboxMessage).findBy({ source: app.service, eventType: 'UserRenamed' });
    expect(renamed.map((row) => JSON.parse(row.payload).data)).toContainEqual({ id });
    await waitFor(() => createdFor(id).length === 1, { what: 'the nested event' });
    expect(createdFor(id)[0].eventId).toBe(envelope.eventId);
  });

  it('rolls the transaction back when an event cannot be written, instead of committing the change without it', async () => {
    const id = unique('u-unserialisable');
    const circular: Record<string, unknown> = { id };
    circular.self = circular;
    await expect(
      publisher.transaction(async (manager) => {
        await manager.insert(Account, { id, name: 'x' });
        await publisher.publish('UserCreated', circular);
      }),
    ).rejects.toThrow(/serialised to JSON/);
    expect(await app.dataSource.getRepository(Account).countBy({ id })).toBe(0);
  });

  it('refuses an event over maxMessageBytes (1 MiB) with EventTooLargeError and rolls the transaction back', async () => {
    const id = unique('u-too-large');
    await expect(
      publisher.transaction(async (manager) => {
        await manager.insert(Account, { id, name: 'x' });
        await publisher.publish('UserCreated', { id, blob: 'x'.repeat(1024 * 1024) });
      }),
    ).rejects.toThrow(EventTooLargeError);
    expect(await app.dataSource.getRepository(Account).countBy({ id })).toBe(0);
  });

  it('never reports a commit that the database turned into a rollback (PostgreSQL), and commits elsewhere', async () => {
    const id = unique('u-caught-failure');
    const work = publisher.transaction(async (manager) => {
      await manager.insert(Account, { id, name: 'x' });
      await publisher.publish('UserCreated', { id }, { key: id });
      // Caught, but on PostgreSQL the failed statement has aborted the transaction.
      await manager.query('SELECT no_such_column FROM no_such_table_here').catch(() => undefined);
    });
    if (engine === 'postgres') {
      await expect(work).rejects.toThrow(CommitRolledBackError);
      await expect(work).rejects.toThrow(/savepoint/);
      expect(await app.dataSource.getRepository(Account).countBy({ id })).toBe(0);
      expect(await rowsKeyed([id])).toEqual([]);
    } else {
      await work;
      expect(await app.dataSource.getRepository(Account).countBy({ id })).toBe(1);
      expect(await rowsKeyed([id])).toHaveLength(1);
    }
  });

  it('keeps one row for an event id written twice (a retried write is a no-op)', async () => {
    const id = unique('u-twice');
    const eventId = unique('evt-twice');
    await publisher.transaction(() => publisher.publish('UserCreated', { id }, { eventId }));
    await publisher.transaction(() => publisher.publish('UserCreated', { id }, { eventId }));
    expect(await app.dataSource.getRepository(SyncOutboxMessage).countBy({ eventId })).toBe(1);
    await waitFor(() => createdFor(id).length === 1, { what: 'the event' });
  });

  it("writes a handler's publishes in its dedupe transaction: a failed attempt publishes nothing, a duplicate delivery nothing again", async () => {
    const id = unique('u-handler');
    const eventId = unique('evt-handler');
    const body = JSON.stringify({ eventId, eventType: 'UserCreated', data: { id, failAfterPublishing: true }, timestamp: new Date().toISOString(), source: 'foreign' });
    await broker.publishRaw(app.exchange, 'UserCreated', body);
    await waitFor(() => openedFor(id).length === 1, { what: 'CustomerOpened after the retry' });
    expect(createdRuns.filter((ctx) => ctx.eventId === eventId).map((ctx) => ctx.attempt)).toEqual([1, 2]);
    expect(openedFor(id)[0].causationId).toBe(eventId);

    // The same event again: the consumer skips it, so nothing is published a second time.
    const duplicatesBefore = app.metrics.snapshot(userCreated).duplicates;
    await broker.publishRaw(app.exchange, 'UserCreated', body);
    await waitFor(() => app.metrics.snapshot(userCreated).duplicates === duplicatesBefore + 1, { what: 'the duplicate skipped' });
    const sentinel = unique('u-sentinel');
    await publisher.transaction(() => users.create(sentinel));
    await waitFor(() => openedFor(sentinel).length === 1, { what: 'the sentinel handled after the duplicate' });
    expect(openedFor(id)).toHaveLength(1);
    const rows = await app.dataSource.getRepository(SyncOutboxMessage).findBy({ source: app.service, eventType: 'CustomerOpened' });
    expect(rows.filter((row) => JSON.parse(row.payload).causationId === eventId)).toHaveLength(1);
  });

  it('reports the backlog and the relay status, and prunes published rows past the retention window', async () => {
    const outbox = app.app.get(SyncOutbox);
    await waitFor(async () => (await outbox.backlog()) === 0, { what: 'an empty backlog' });
    const old = unique('u-old');
    const envelope = await publisher.transaction(() => publisher.publish('UserCreated', { id: old }));
    await waitFor(() => createdFor(old).length === 1, { what: 'the event to prune' });
    await waitFor(async () => (await rowsOf([envelope.eventId]))[0]?.publishedAt, { what: 'its row published' });
    expect(outbox.status()).toMatchObject({ running: true, consecutiveFailures: 0 });
    expect(outbox.status().lastPublishedAt).toBeInstanceOf(Date);
    const repository = app.dataSource.getRepository(SyncOutboxMessage);
    const [row] = await rowsOf([envelope.eventId]);
    await repository.update({ eventId: envelope.eventId }, { publishedAt: new Date(row.publishedAt!.getTime() - 2 * 24 * 3600_000) });
    const unpublished = unique('evt-unpublished');
    await repository.insert({ eventId: unpublished, position: 1, eventType: 'Never', source: app.service, routingKey: 'Never', key: null, payload: '{}', headers: null, nextAttemptAt: Date.now() + 3600_000 });
    try {
      // The handler's own CustomerOpened for the event above may still be on its way out.
      await waitFor(async () => (await outbox.backlog()) === 1, { what: 'a backlog of the one unpublished row' });
      await app.app.get(SyncLifecycle).prune(false, 24 * 3600_000);
      expect(await rowsOf([envelope.eventId])).toEqual([]);
      // Unpublished rows are never pruned, however old.
      expect(await rowsOf([unpublished])).toHaveLength(1);
    } finally {
      await repository.delete({ eventId: unpublished });
    }
  });
});

describe('outbox options', () => {
  it('fails startup with the migration to run when sync_outbox is missing', async () => {
    const database = typeOrmOptions('sqlite', [SyncProcessedEvent]);
    const moduleRef = await Test.createTestingModule({
      imports: [
        TypeOrmModule.forRoot({ ...database.options, autoLoadEntities: false } as TypeOrmModuleOptions),
        SyncModule.forRoot({ service: unique('svc'), exchange: unique('ex'), url: AMQP_URL, registerEntities: false }),
      ],
    }).compile();
    moduleRef.useLogger(false);
    try {
      const init = moduleRef.init();
      await expect(init).rejects.toThrow(OutboxTableMissingError);
      await expect(init).rejects.toThrow(/CreateSyncOutbox1764201600000[\s\S]*outbox: false/);
    } finally {
      await moduleRef.close();
      database.cleanup();
    }
  });

  it('publishes the events committed before shutdown, and the batch in flight, before closing', async () => {
    const seen = new Set<string>();
    @Injectable()
    class Listener {
      @OnEvent('UserCreated', { consumer: unique('Shutdown.onUserCreated') })
      async on(data: { id: string }) {
        seen.add(data.id);
      }
    }
    const consumerApp = await startApp({ engine: 'postgres', providers: [Listener] });
    // A poll interval longer than the test: only the wake-ups and the shutdown publish.
    const publisherApp = await startApp({ engine: 'postgres', exchange: consumerApp.exchange, sync: { outbox: { pollInterval: '10m', batchSize: 50 } } });
    try {
      const publisher = publisherApp.app.get(SyncPublisher);
      const ids = Array.from({ length: 300 }, (_, i) => `${publisherApp.service}-${i}`);
      await Promise.all(ids.map((id) => publisher.transaction(() => publisher.publish('UserCreated', { id }))));
      await publisherApp.close();
      const outbox = consumerApp.dataSource.getRepository(SyncOutboxMessage);
      expect(await outbox.countBy({ source: publisherApp.service, publishedAt: IsNull() })).toBe(0);
      expect(await outbox.countBy({ source: publisherApp.service })).toBe(ids.length);
      await waitFor(() => seen.size === ids.length, { what: 'all 300 events' });
    } finally {
      await consumerApp.close();
    }
  });

  it("writes to and relays from the outbox table in the DataSource's own PostgreSQL schema", async () => {
    const schema = `outbox_${unique('s').replace(/-/g, '_')}`;
    const base = typeOrmOptions('postgres', []);
    const setup = new DataSource({ ...(base.options as DataSourceOptions), entities: [], synchronize: false });
    await setup.initialize();
    await setup.query(`CREATE SCHEMA ${schema}`);
    const seen: string[] = [];
    @Injectable()
    class Listener {
      @OnEvent('UserCreated', { consumer: unique('Schema.onUserCreated') })
      async on(data: { id: string }) {
        seen.push(data.id);
      }
    }
    const app = await startApp({ engine: 'postgres', providers: [Listener], typeorm: { options: { ...base.options, schema } as TypeOrmModuleOptions, cleanup: () => undefined } });
    try {
      const publisher = app.app.get(SyncPublisher);
      const envelope = await publisher.transaction(() => publisher.publish('UserCreated', { id: 'in-schema' }));
      await waitFor(() => seen.includes('in-schema'), { what: 'the event from the schema' });
      const [row] = await setup.query(`SELECT published_at FROM ${schema}.sync_outbox WHERE event_id = $1`, [envelope.eventId]);
      expect(row.published_at).not.toBeNull();
      expect(await setup.query(`SELECT 1 FROM public.sync_outbox WHERE event_id = $1`, [envelope.eventId])).toEqual([]);
    } finally {
      await app.close();
      await setup.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await setup.destroy();
    }
  });

  it("with outsideTransaction: 'outbox', a publish outside any transaction is stored first, then relayed", async () => {
    const seen: string[] = [];
    @Injectable()
    class Listener {
      @OnEvent('UserCreated', { consumer: unique('Outside.onUserCreated') })
      async on(data: { id: string }) {
        seen.push(data.id);
      }
    }
    const app = await startApp({ engine: 'postgres', providers: [Listener], sync: { outbox: { outsideTransaction: 'outbox' } } });
    try {
      const id = unique('u-outside');
      const envelope = await app.app.get(SyncPublisher).publish('UserCreated', { id });
      expect(await app.dataSource.getRepository(SyncOutboxMessage).countBy({ eventId: envelope.eventId })).toBe(1);
      await waitFor(() => seen.includes(id), { what: 'the stored event' });
      expect(app.metrics.snapshot()).toMatchObject({ outboxWritten: 1, outboxRelayed: 1 });
    } finally {
      await app.close();
    }
  });

  it('with outbox: false, transaction() fails with a typed error that says how to turn it on, and publishes go straight out', async () => {
    const app = await startApp({ engine: 'sqlite', sync: { outbox: false } });
    try {
      const publisher = app.app.get(SyncPublisher);
      await expect(publisher.transaction(async () => 1)).rejects.toThrow(OutboxUnavailableError);
      await expect(publisher.transaction(async () => 1)).rejects.toThrow(/outbox: false/);
      await publisher.publish('Nobody.Listens', { ok: true });
      expect(app.metrics.snapshot()).toMatchObject({ published: 1, outboxWritten: 0 });
    } finally {
      await app.close();
    }
  });
});
