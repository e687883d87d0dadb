import { DataSource, type EntityManager } from 'typeorm';
import { InboxStore } from '../../lib/persistence/inbox.store.js';
import { TransactionGate } from '../../lib/persistence/transaction-gate.js';
import { SYNC_ENTITIES, SyncKeyOffset, SyncProcessedEvent } from '../../lib/index.js';
import { ENGINES, typeOrmOptions } from '../support/databases.js';
import { deferred } from '../support/deferred.js';
import { unique, waitFor } from '../support/wait.js';

describe.each(ENGINES)('InboxStore on %s', (engine) => {
  let dataSource: DataSource;
  let cleanup: () => void;
  let inbox: InboxStore;
  const consumer = unique('Inbox.spec');

  beforeAll(async () => {
    const typeorm = typeOrmOptions(engine, SYNC_ENTITIES);
    cleanup = typeorm.cleanup;
    const { autoLoadEntities: _unused, ...options } = typeorm.options as Record<string, unknown>;
    dataSource = await new DataSource(options as never).initialize();
    inbox = new InboxStore(new TransactionGate(dataSource));
  });

  afterAll(async () => {
    await dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await dataSource.destroy();
    cleanup();
  });

  describe('advanceSequence (the stale-event guard)', () => {
    afterAll(async () => {
      await dataSource.getRepository(SyncKeyOffset).delete({ consumer });
    });

    const advance = (key: string, sequence: number) => dataSource.transaction((manager) => inbox.advanceSequence(manager, consumer, key, sequence));

    it('records the first sequence of a key, advances on newer ones and reports the previous, refuses older or equal ones', async () => {
      const key = unique('key');
      expect(await advance(key, 3)).toEqual({ stale: false, previous: null });
      expect(await advance(key, 5)).toEqual({ stale: false, previous: 3 });
      expect(await advance(key, 5)).toEqual({ stale: true, previous: 5 });
      expect(await advance(key, 4)).toEqual({ stale: true, previous: 5 });
      expect(await advance(key, 9)).toEqual({ stale: false, previous: 5 });
      expect((await dataSource.getRepository(SyncKeyOffset).findOneBy({ consumer, key }))?.sequence).toBe(9);
    });

    // PostgreSQL reads and advances a known key in one statement, and falls back to the locking path when a new key is raced.
    if (engine === 'postgres') {
      it.each([
        [1, 2, { stale: false, previous: 1 }],
        [2, 1, { stale: true, previous: 2 }],
      ])('orders two transactions racing on a new key: %p first, then %p', async (first, second, expected) => {
        const key = unique('race');
        const firstHolds = deferred();
        const release = deferred();
        // The first transaction creates the key's row and keeps it uncommitted while the second one arrives.
        const one = dataSource.transaction(async (manager) => {
          const result = await inbox.advanceSequence(manager, consumer, key, first);
          firstHolds.resolve();
          await release.promise;
          return result;
        });
        await firstHolds.promise;
        const two = dataSource.transaction((manager) => inbox.advanceSequence(manager, consumer, key, second));
        // The second waits on the first's row lock; then let the first commit.
        const waiting = "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()";
        await waitFor(async () => Number((await dataSource.query(waiting))[0].n) > 0, { what: 'the second transaction waiting on the row lock' });
        release.resolve();
        expect(await one).toEqual({ stale: false, previous: null });
        expect(await two).toEqual(expected);
        expect((await dataSource.getRepository(SyncKeyOffset).findOneBy({ consumer, key }))?.sequence).toBe(Math.max(first, second));
      });
    }
  });

  it('runs the work once per event id and reports the duplicate', async () => {
    let runs = 0;
    const first = await inbox.runOnce(consumer, 'e-1', async () => ++runs);
    const second = await inbox.runOnce(consumer, 'e-1', async () => ++runs);
    expect(first).toEqual({ status: 'processed', result: 1 });
    expect(second).toEqual({ status: 'duplicate' });
    expect(runs).toBe(1);
    expect(await inbox.isProcessed(consumer, 'e-1')).toBe(true);
  });

  it('rolls the dedupe row back with failed work, so the event can run again', async () => {
    await expect(
      inbox.runOnce(consumer, 'e-2', async () => {
        throw new Error('handler failed');
      }),
    ).rejects.toThrow('handler failed');
    expect(await inbox.isProcessed(consumer, 'e-2')).toBe(false);
    await expect(inbox.runOnce(consumer, 'e-2', async () => 'ok')).resolves.toEqual({ status: 'processed', result: 'ok' });
  });

  it('keys dedupe by consumer: another consumer still processes the same event id', async () => {
    const other = `${consumer}-other`;
    await inbox.runOnce(consumer, 'e-3', async () => undefined);
    await expect(inbox.runOnce(other, 'e-3', async () => 'ran')).resolves.toEqual({ status: 'processed', result: 'ran' });
    await dataSource.getRepository(SyncProcessedEvent).delete({ consumer: other });
  });

  it('fails without running the work when the dedupe row cannot be written for a reason other than a duplicate', async () => {
    // A prefix names a table that was never created: the insert fails the way an unmigrated database does.
    const entityPrefix = `${unique('missing').replace(/-/g, '_')}_`;
    const unmigrated = await new DataSource({ ...dataSource.options, synchronize: false, entityPrefix } as never).initialize();
    try {
      let runs = 0;
      await expect(new InboxStore(new TransactionGate(unmigrated)).runOnce(consumer, 'e-unmigrated', async () => ++runs)).rejects.toThrow(/sync_processed_events/);
      expect(runs).toBe(0);
    } finally {
      await unmigrated.destroy();
    }
  });

  it('rolls batch members back to their savepoints one after another, each with its dedupe row', async () => {
    // SQLite: a statement cache of two makes the second rollback find its DELETE cached and its
    // ROLLBACK TO not, which TypeORM runs in fewer steps: issued together, the DELETE would run
    // first and the rollback would bring the row back.
    const { autoLoadEntities: _unused, ...options } = dataSource.options as unknown as Record<string, unknown>;
    const small = engine === 'sqlite' ? await new DataSource({ ...options, synchronize: false, statementCacheSize: 2 } as never).initialize() : dataSource;
    const store = small === dataSource ? inbox : new InboxStore(new TransactionGate(small));
    const [kept, first, second] = ['sp-kept', 'sp-first', 'sp-second'].map((id) => unique(id));
    try {
      const { isNew } = await store.runBatch(consumer, [kept, first, second], async (manager) => {
        for (const id of [first, second]) {
          await (await store.savepoint(manager)).placed;
          await store.rollbackToSavepoint(manager, consumer, id);
        }
      });
      expect(isNew).toEqual([true, true, true]);
    } finally {
      if (small !== dataSource) await small.destroy();
    }
    expect([await inbox.isProcessed(consumer, kept), await inbox.isProcessed(consumer, first), await inbox.isProcessed(consumer, second)]).toEqual([true, false, false]);
  });

  if (engine === 'postgres') {
    it('on a pipelined connection, queues the savepoint ahead of the next statement without waiting, and rolls that statement back', async () => {
      const { autoLoadEntities: _unused, ...options } = typeOrmOptions('postgres', SYNC_ENTITIES, { pipeline: true }).options as Record<string, unknown>;
      const pipelined = await new DataSource({ ...options, synchronize: false } as never).initialize();
      const store = new InboxStore(new TransactionGate(pipelined));
      const [kept, failed] = [unique('pipe-kept'), unique('pipe-failed')];
      const key = unique('pipe-key');
      try {
        await store.runBatch(consumer, [kept, failed], async (manager) => {
          const { placed } = await store.savepoint(manager);
          // Issued before the savepoint has come back: it must still run after it.
          const written = store.advanceSequence(manager, consumer, key, 1);
          expect(await Promise.all([written, placed.then(() => 'placed')])).toEqual([{ stale: false, previous: null }, 'placed']);
          await store.rollbackToSavepoint(manager, consumer, failed);
        });
      } finally {
        await pipelined.destroy();
      }
      expect(await dataSource.getRepository(SyncKeyOffset).countBy({ consumer, key })).toBe(0);
      expect([await inbox.isProcessed(consumer, kept), await inbox.isProcessed(consumer, failed)]).toEqual([true, false]);
    });
  }

  it('prunes rows older than the retention window and keeps newer ones', async () => {
    const repository = dataSource.getRepository(SyncProcessedEvent);
    await inbox.runOnce(consumer, 'recent', async () => undefined);
    const old = {
      postgres: `UPDATE sync_processed_events SET processed_at = now() - interval '10 days' WHERE consumer = $1 AND event_id = 'old'`,
      mariadb: `UPDATE sync_processed_events SET processed_at = NOW(6) - INTERVAL 10 DAY WHERE consumer = ? AND event_id = 'old'`,
      sqlite: `UPDATE sync_processed_events SET processed_at = datetime('now', '-10 days') WHERE consumer = ? AND event_id = 'old'`,
    }[engine];
    await inbox.runOnce(consumer, 'old', async () => undefined);
    await dataSource.query(old, [consumer]);
    const deleted = await inbox.prune(7 * 24 * 3600 * 1000);
    expect(deleted).toBeGreaterThanOrEqual(1);
    expect(await repository.countBy({ consumer, eventId: 'old' })).toBe(0);
    expect(await repository.countBy({ consumer, eventId: 'recent' })).toBe(1);
  });
});

describe.each(['postgres', 'mariadb'] as const)('InboxStore on %s under a deadlock', (engine) => {
  let dataSource: DataSource;
  let inbox: InboxStore;
  const consumer = unique('Inbox.deadlock');
  const rows = [unique('lock-a'), unique('lock-b')];

  beforeAll(async () => {
    const { autoLoadEntities: _unused, ...options } = typeOrmOptions(engine, SYNC_ENTITIES).options as Record<string, unknown>;
    dataSource = await new DataSource(options as never).initialize();
    inbox = new InboxStore(new TransactionGate(dataSource));
    await dataSource.query('CREATE TABLE IF NOT EXISTS test_inbox_locks (id varchar(100) PRIMARY KEY, n int NOT NULL)');
    for (const id of rows) await dataSource.query(`INSERT INTO test_inbox_locks (id, n) VALUES (${placeholder(1)}, 0)`, [id]);
  });

  afterAll(async () => {
    for (const id of rows) await dataSource.query(`DELETE FROM test_inbox_locks WHERE id = ${placeholder(1)}`, [id]);
    await dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await dataSource.destroy();
  });

  const placeholder = (n: number) => (engine === 'postgres' ? `$${n}` : '?');
  const bump = (manager: EntityManager, id: string) => manager.query(`UPDATE test_inbox_locks SET n = n + 1 WHERE id = ${placeholder(1)}`, [id]);

  it('runs the deadlock victim again instead of failing it, and both commit once', async () => {
    const locked = [deferred(), deferred()];
    const runs = [0, 0];
    // Each transaction locks its own row, waits until the other holds its row, then wants the other's: a real deadlock.
    const work = (me: 0 | 1) => async (manager: EntityManager) => {
      runs[me] += 1;
      await bump(manager, rows[me]);
      locked[me].resolve();
      await locked[1 - me].promise;
      await bump(manager, rows[1 - me]);
      return me;
    };

    const outcomes = await Promise.all([inbox.runOnce(consumer, 'e-a', work(0)), inbox.runOnce(consumer, 'e-b', work(1))]);

    expect(outcomes).toEqual([
      { status: 'processed', result: 0 },
      { status: 'processed', result: 1 },
    ]);
    expect([...runs].sort()).toEqual([1, 2]);
    const counts = await dataSource.query(`SELECT n FROM test_inbox_locks WHERE id IN (${placeholder(1)}, ${placeholder(2)})`, rows);
    expect(counts.map((row: { n: number }) => Number(row.n))).toEqual([2, 2]);
    expect(await inbox.isProcessed(consumer, 'e-a')).toBe(true);
    expect(await inbox.isProcessed(consumer, 'e-b')).toBe(true);
  });
});
