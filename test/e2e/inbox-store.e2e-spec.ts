import { DataSource } from 'typeorm';
import { InboxStore } from '../../lib/persistence/inbox.store.js';
import { SYNC_ENTITIES, SyncProcessedEvent } from '../../lib/index.js';
import { ENGINES, typeOrmOptions } from '../support/databases.js';
import { unique } from '../support/wait.js';

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
    inbox = new InboxStore(dataSource);
  });

  afterAll(async () => {
    await dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await dataSource.destroy();
    cleanup();
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
