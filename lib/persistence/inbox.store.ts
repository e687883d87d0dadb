import type { DataSource, EntityManager } from 'typeorm';
import { AbortedTransactionError } from '../errors/aborted-transaction.error.js';
import { CommitRolledBackError } from '../errors/commit-rolled-back.error.js';
import { type Dialect, isTransientConflict, isUniqueViolation, tableOf, timeAgo } from './dialect.js';
import { SyncKeyOffset } from './entities/sync-key-offset.entity.js';
import { SyncProcessedEvent } from './entities/sync-processed-event.entity.js';
import type { TransactionGate } from './transaction-gate.js';
import { holdClientWritesForOneTurn, pipelinedClient } from './write-hold.js';

export type InboxOutcome<T> = { status: 'processed'; result: T } | { status: 'duplicate' };

class AlreadyProcessed {}

const MAX_CONFLICT_RERUNS = 3;
const MEMBER_SAVEPOINT = 'sync_batch_member';

/**
 * Runs a handler at most once per (consumer, event id) in effect: the dedupe row and the
 * handler's writes commit or roll back together. A concurrent transaction inserting the same
 * key waits on the row lock and then sees the duplicate, so two consumers never both apply it.
 */
export class InboxStore {
  readonly dialect: Dialect;
  private readonly dataSource: DataSource;
  private readonly table: string;
  private readonly offsets: string;

  constructor(private readonly gate: TransactionGate) {
    this.dialect = gate.dialect;
    this.dataSource = gate.dataSource;
    this.table = tableOf(gate.dataSource, SyncProcessedEvent, 'sync_processed_events');
    this.offsets = tableOf(gate.dataSource, SyncKeyOffset, 'sync_key_offsets');
  }

  /**
   * The stale-event guard, inside the handler's transaction: locks the key's offset row (creating
   * it the first time), and either records `sequence` as the last applied or reports the event
   * stale. Two consumers racing on one key wait on the row lock, so they apply in turn.
   */
  async advanceSequence(manager: EntityManager, consumer: string, key: string, sequence: number): Promise<{ stale: boolean; previous: number | null }> {
    if (this.dialect === 'postgres') {
      // One round trip for a key seen before: lock and read the row, advance it if newer.
      const [row]: Array<{ previous: string | null; found: boolean; advanced: boolean }> = await manager.query(
        `WITH old AS (SELECT sequence FROM ${this.offsets} WHERE consumer = $1 AND event_key = $2 FOR UPDATE), ` +
          `advanced AS (UPDATE ${this.offsets} SET sequence = $3, updated_at = CURRENT_TIMESTAMP WHERE consumer = $1 AND event_key = $2 ` +
          `AND EXISTS (SELECT 1 FROM old WHERE old.sequence IS NULL OR old.sequence < $3) RETURNING 1) ` +
          'SELECT (SELECT sequence FROM old) AS previous, EXISTS (SELECT 1 FROM old) AS found, EXISTS (SELECT 1 FROM advanced) AS advanced',
        [consumer, key, sequence],
      );
      const previous = row.previous === null ? null : Number(row.previous);
      if (row.found) return { stale: !row.advanced, previous };
      // A key seen for the first time; if another transaction inserted it meanwhile, take the locking path.
      const inserted: unknown[] = await manager.query(
        `INSERT INTO ${this.offsets} (consumer, event_key, sequence, updated_at) VALUES ($1, $2, $3, CURRENT_TIMESTAMP) ON CONFLICT DO NOTHING RETURNING 1`,
        [consumer, key, sequence],
      );
      if (inserted.length > 0) return { stale: false, previous: null };
    }
    return this.advanceLocked(manager, consumer, key, sequence);
  }

  /** Ensures the key's row, locks it, and advances it if `sequence` is newer: three statements. */
  private async advanceLocked(manager: EntityManager, consumer: string, key: string, sequence: number): Promise<{ stale: boolean; previous: number | null }> {
    const [c, k, s] = this.dialect === 'postgres' ? ['$1', '$2', '$3'] : ['?', '?', '?'];
    const ensure =
      this.dialect === 'mysql'
        ? `INSERT INTO ${this.offsets} (consumer, event_key, sequence) VALUES (?, ?, NULL) ON DUPLICATE KEY UPDATE consumer = consumer`
        : `INSERT INTO ${this.offsets} (consumer, event_key, sequence) VALUES (${c}, ${k}, NULL) ON CONFLICT DO NOTHING`;
    await manager.query(ensure, [consumer, key]);
    const lock = this.dialect === 'sqlite' ? '' : ' FOR UPDATE';
    const rows: Array<{ sequence: string | number | null }> = await manager.query(`SELECT sequence FROM ${this.offsets} WHERE consumer = ${c} AND event_key = ${k}${lock}`, [consumer, key]);
    const previous = rows[0]?.sequence === null || rows[0]?.sequence === undefined ? null : Number(rows[0].sequence);
    if (previous !== null && sequence <= previous) return { stale: true, previous };
    const now = this.dialect === 'mysql' ? 'CURRENT_TIMESTAMP(6)' : 'CURRENT_TIMESTAMP';
    await manager.query(`UPDATE ${this.offsets} SET sequence = ${s}, updated_at = ${now} WHERE consumer = ${c} AND event_key = ${k}`, this.dialect === 'postgres' ? [consumer, key, sequence] : [sequence, consumer, key]);
    return { stale: false, previous };
  }

  runOnce<T>(consumer: string, eventId: string, work: (manager: EntityManager) => Promise<T>): Promise<InboxOutcome<T>> {
    return this.transaction(consumer, eventId, work);
  }

  /**
   * Two deliveries of one event race on the dedupe row; when the winner rolls back, InnoDB may
   * pick the waiter as a deadlock victim. Running the transaction again at once then sees the
   * row (or takes it) instead of spending one of the handler's retries on a lock conflict.
   */
  private async transaction<T>(consumer: string, eventId: string, work: (manager: EntityManager) => Promise<T>): Promise<InboxOutcome<T>> {
    for (let conflicts = 0; ; conflicts++) {
      try {
        return await this.transactionOnce(consumer, eventId, work);
      } catch (error) {
        if (conflicts >= MAX_CONFLICT_RERUNS || !isTransientConflict(this.dialect, error)) throw error;
      }
    }
  }

  private async transactionOnce<T>(consumer: string, eventId: string, work: (manager: EntityManager) => Promise<T>): Promise<InboxOutcome<T>> {
    try {
      const result = await this.gate.transaction(async (manager) => {
        // The batch's dedupe statement, for a batch of one.
        const [isNew] = await this.markBatch(manager, consumer, [eventId]);
        if (!isNew) throw new AlreadyProcessed();
        return work(manager);
      });
      return { status: 'processed', result };
    } catch (error) {
      if (error instanceof AlreadyProcessed) return { status: 'duplicate' };
      if (error instanceof CommitRolledBackError) throw new AbortedTransactionError(consumer, eventId, error);
      throw error;
    }
  }

  /**
   * Runs a batch of events in one transaction: one dedupe insert marks the new ones (`isNew`,
   * in the order given; a repeated id is new only the first time), `work` runs their handlers,
   * one commit. A conflict re-runs the whole batch, as for a single event. `eventIds` may be a
   * function: it is called when the dedupe insert is sent, each time the batch runs.
   */
  async runBatch<T>(consumer: string, eventIds: string[] | (() => string[]), work: (manager: EntityManager, isNew: boolean[]) => Promise<T>): Promise<{ isNew: boolean[]; result: T }> {
    let ids = typeof eventIds === 'function' ? [] : eventIds;
    for (let conflicts = 0; ; conflicts++) {
      try {
        return await this.gate.transaction(async (manager) => {
          if (typeof eventIds === 'function') ids = eventIds();
          const isNew = await this.markBatch(manager, consumer, ids);
          return { isNew, result: await work(manager, isNew) };
        });
      } catch (error) {
        if (error instanceof CommitRolledBackError) throw new AbortedTransactionError(consumer, ids[0], error);
        if (conflicts >= MAX_CONFLICT_RERUNS || !isTransientConflict(this.dialect, error)) throw error;
      }
    }
  }

  /**
   * Marks where the next handler of a batch starts, so it can be rolled back alone. Resolves
   * once whatever is issued next on `manager` is sure to run after the savepoint: on a
   * pipelined PostgreSQL connection at once (the statement is queued on the connection itself,
   * in call order, and the connection's writes are held for this turn, so it leaves in one
   * write with the next statement; `placed` settles when it has run), elsewhere
   * once the savepoint is in place. Statements issued through TypeORM at the same time may run
   * in any order (its query paths differ in length, e.g. with the SQLite statement cache).
   */
  async savepoint(manager: EntityManager): Promise<{ placed: Promise<unknown> }> {
    const client = pipelinedClient(manager);
    if (client) {
      holdClientWritesForOneTurn(client);
      return { placed: client.query(`SAVEPOINT ${MEMBER_SAVEPOINT}`) };
    }
    await manager.query(`SAVEPOINT ${MEMBER_SAVEPOINT}`);
    return { placed: Promise.resolve() };
  }

  /** Rolls back the handler since the last savepoint, and its event's dedupe row, so the event runs again later. */
  async rollbackToSavepoint(manager: EntityManager, consumer: string, eventId: string): Promise<void> {
    await manager.query(`ROLLBACK TO SAVEPOINT ${MEMBER_SAVEPOINT}`);
    const [c, e] = this.dialect === 'postgres' ? ['$1', '$2'] : ['?', '?'];
    await manager.query(`DELETE FROM ${this.table} WHERE consumer = ${c} AND event_id = ${e}`, [consumer, eventId]);
  }

  /**
   * Inserts the dedupe rows of `eventIds` in the transaction of `manager`; true for each id that
   * was new (a repeated id is new only the first time).
   */
  async markBatch(manager: EntityManager, consumer: string, eventIds: string[]): Promise<boolean[]> {
    const firstIndex = new Map<string, number>();
    eventIds.forEach((id, index) => firstIndex.has(id) || firstIndex.set(id, index));
    // One lock order for every batch, so two consumers inserting overlapping batches do not deadlock.
    const unique = [...firstIndex.keys()].sort();
    const inserted = new Set<string>();
    if (this.dialect === 'mysql') {
      // No RETURNING on MySQL; a duplicate key there fails only its statement, not the transaction.
      for (const id of unique) {
        try {
          await this.markProcessed(manager, consumer, id);
          inserted.add(id);
        } catch (error) {
          if (!(error instanceof AlreadyProcessed)) throw error;
        }
      }
    } else {
      const postgres = this.dialect === 'postgres';
      const values = unique.map((_, i) => (postgres ? `($1, $${i + 2})` : '(?, ?)')).join(', ');
      const parameters = postgres ? [consumer, ...unique] : unique.flatMap((id) => [consumer, id]);
      const rows: Array<{ event_id: string }> = await manager.query(
        `INSERT INTO ${this.table} (consumer, event_id) VALUES ${values} ON CONFLICT DO NOTHING RETURNING event_id`,
        parameters,
      );
      for (const row of rows) inserted.add(row.event_id);
    }
    return eventIds.map((id, index) => inserted.has(id) && firstIndex.get(id) === index);
  }

  /** One dedupe row, MySQL's way (no RETURNING there): a duplicate fails with AlreadyProcessed. */
  private async markProcessed(manager: EntityManager, consumer: string, eventId: string): Promise<void> {
    try {
      await manager.createQueryBuilder().insert().into(SyncProcessedEvent).values({ consumer, eventId }).updateEntity(false).execute();
    } catch (error) {
      if (isUniqueViolation(this.dialect, error)) throw new AlreadyProcessed();
      throw error;
    }
  }

  /** Whether a consumer has processed an event (for tests and tooling). */
  async isProcessed(consumer: string, eventId: string): Promise<boolean> {
    return (await this.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer, eventId })) > 0;
  }

  /** Deletes dedupe rows older than the retention window; returns how many. */
  async prune(olderThanMs: number): Promise<number> {
    const condition = `processed_at < ${timeAgo(this.dialect, olderThanMs)}`;
    const result = await this.dataSource.createQueryBuilder().delete().from(SyncProcessedEvent).where(condition).execute();
    return result.affected ?? 0;
  }
}
