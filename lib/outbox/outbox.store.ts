import type { EntityManager } from 'typeorm';
import type { SyncEvent } from '../interfaces/sync-event.interface.js';
import { type Dialect, driverErrorOf, tableOf, timeAgo } from '../persistence/dialect.js';
import { SyncKeyOffset } from '../persistence/entities/sync-key-offset.entity.js';
import { SyncOutboxMessage } from '../persistence/entities/sync-outbox-message.entity.js';
import type { TransactionGate } from '../persistence/transaction-gate.js';
import { OutboxPayloadTooLargeError } from '../errors/outbox-payload-too-large.error.js';

/** An unpublished outbox row, as the relay needs it. */
export interface PendingOutboxRow {
  eventId: string;
  eventType: string;
  routingKey: string;
  payload: string;
  headers: Record<string, string | number | boolean> | undefined;
  attempts: number;
}

type Row = Record<string, unknown>;


let lastPosition = 0;

/** Microseconds since the epoch, strictly increasing within this process. */
export function nextPosition(): number {
  lastPosition = Math.max(Date.now() * 1000, lastPosition + 1);
  return lastPosition;
}

/** SQL access to `sync_outbox`. Plain statements: they sit on the hot path of every outbox publish. */
export class OutboxStore {
  readonly dialect: Dialect;
  private readonly table: string;
  private readonly offsets: string;

  constructor(
    readonly gate: TransactionGate,
    private readonly source: string,
  ) {
    this.dialect = gate.dialect;
    this.table = tableOf(gate.dataSource, SyncOutboxMessage, 'sync_outbox');
    this.offsets = tableOf(gate.dataSource, SyncKeyOffset, 'sync_key_offsets');
  }

  /**
   * Writes an event with the caller's transaction. An event id already in the table is left as
   * it is: writing an event again under its id is a no-op, as it is for consumers.
   */
  async add(manager: EntityManager, envelope: SyncEvent, payload: string, headers?: Record<string, unknown>): Promise<void> {
    const values = [
      envelope.eventId,
      nextPosition(),
      envelope.eventType,
      this.source,
      envelope.eventType,
      envelope.key ?? null,
      payload,
      headers && Object.keys(headers).length > 0 ? JSON.stringify(headers) : null,
    ];
    const onConflict = this.dialect === 'mysql' ? ' ON DUPLICATE KEY UPDATE event_id = event_id' : ' ON CONFLICT (event_id) DO NOTHING';
    try {
      await manager.query(
        `INSERT INTO ${this.table} (event_id, position, event_type, source, routing_key, event_key, payload, headers) VALUES (${this.placeholders(values.length)})${onConflict}`,
        values,
      );
    } catch (error) {
      if (isDataTooLong(error)) throw new OutboxPayloadTooLargeError(envelope.eventType, Buffer.byteLength(payload), error);
      throw error;
    }
  }

  /**
   * Up to `limit` due rows of this service in write order. On PostgreSQL and MySQL/MariaDB the
   * rows stay locked until `manager`'s transaction ends and other relays skip them; a row
   * committed late with an earlier position is still unpublished, so the next scan finds it.
   */
  async claim(manager: EntityManager, limit: number, now: number): Promise<PendingOutboxRow[]> {
    const lock = this.dialect === 'sqlite' ? '' : ' FOR UPDATE SKIP LOCKED';
    const [source, due, max] = this.dialect === 'postgres' ? ['$1', '$2', '$3'] : ['?', '?', '?'];
    const rows: Row[] = await manager.query(
      `SELECT event_id, event_type, routing_key, payload, headers, attempts FROM ${this.table} ` +
        `WHERE source = ${source} AND published_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= ${due}) ` +
        `ORDER BY position, event_id LIMIT ${max}${lock}`,
      [this.source, now, limit],
    );
    return rows.map((row) => ({
      eventId: String(row.event_id),
      eventType: String(row.event_type),
      routingKey: String(row.routing_key),
      payload: String(row.payload),
      headers: row.headers ? JSON.parse(String(row.headers)) : undefined,
      attempts: Number(row.attempts),
    }));
  }

  async markPublished(manager: EntityManager, eventIds: string[]): Promise<void> {
    if (eventIds.length === 0) return;
    const now = this.dialect === 'mysql' ? 'CURRENT_TIMESTAMP(6)' : 'CURRENT_TIMESTAMP';
    await manager.query(
      `UPDATE ${this.table} SET published_at = ${now}, attempts = attempts + 1, next_attempt_at = NULL, last_error = NULL WHERE event_id IN (${this.placeholders(eventIds.length)})`,
      eventIds,
    );
  }

  async markFailed(manager: EntityManager, eventId: string, error: string, nextAttemptAt: number): Promise<void> {
    const [e, next, row] = this.dialect === 'postgres' ? ['$1', '$2', '$3'] : ['?', '?', '?'];
    await manager.query(`UPDATE ${this.table} SET attempts = attempts + 1, last_error = ${e}, next_attempt_at = ${next} WHERE event_id = ${row}`, [
      error.slice(0, 2_000),
      nextAttemptAt,
      eventId,
    ]);
  }

  /** Rows of this service not yet published. */
  async backlog(): Promise<number> {
    const param = this.dialect === 'postgres' ? '$1' : '?';
    const rows: Row[] = await this.gate.run(() =>
      this.gate.dataSource.query(`SELECT COUNT(*) AS backlog FROM ${this.table} WHERE source = ${param} AND published_at IS NULL`, [this.source]),
    );
    return Number(rows[0]?.backlog ?? 0);
  }

  /** Deletes published rows older than the window; returns how many. */
  async prune(olderThanMs: number): Promise<number> {
    const before = timeAgo(this.dialect, olderThanMs);
    return this.gate.run(async () => {
      const runner = this.gate.dataSource.createQueryRunner();
      try {
        const result = await runner.query(
          `DELETE FROM ${this.table} WHERE source = ${this.placeholders(1)} AND published_at IS NOT NULL AND published_at < ${before}`,
          [this.source],
          true,
        );
        return result.affected ?? 0;
      } finally {
        await runner.release();
      }
    });
  }

  /** Throws the database's error when the table is missing (the migration has not run). */
  /** Fails with `missing(...)` for the first of its tables the database does not have. */
  async assertTablesExist(missing: (table: string, migration: string, error: unknown) => Error): Promise<void> {
    for (const [table, migration] of [
      [this.table, 'CreateSyncOutbox1764201600000'],
      [this.offsets, 'CreateSyncKeyOffsets1764288000000'],
    ]) {
      try {
        await this.gate.run(() => this.gate.dataSource.query(`SELECT 1 FROM ${table} WHERE 1 = 0`));
      } catch (error) {
        throw missing(table, migration, error);
      }
    }
  }

  /**
   * The next sequence of `key` among this service's events, in the caller's transaction: the
   * counter row stays locked until that transaction ends, so two transactions publishing for one
   * key take their numbers in commit order, and a rolled-back number is never seen by anyone.
   * The counters live in `sync_key_offsets` under the stream name `outbox:<service>`, which no
   * consumer name can take (':' is not allowed in one).
   */
  async nextSequence(manager: EntityManager, key: string): Promise<number> {
    const stream = `outbox:${this.source}`;
    if (this.dialect === 'mysql') {
      await manager.query(
        `INSERT INTO ${this.offsets} (consumer, event_key, sequence, updated_at) VALUES (?, ?, LAST_INSERT_ID(1), CURRENT_TIMESTAMP(6)) ` +
          'ON DUPLICATE KEY UPDATE sequence = LAST_INSERT_ID(COALESCE(sequence, 0) + 1), updated_at = CURRENT_TIMESTAMP(6)',
        [stream, key],
      );
      const [row] = (await manager.query('SELECT LAST_INSERT_ID() AS sequence')) as Row[];
      return Number(row.sequence);
    }
    const [c, k] = this.dialect === 'postgres' ? ['$1', '$2'] : ['?', '?'];
    const rows = (await manager.query(
      `INSERT INTO ${this.offsets} AS o (consumer, event_key, sequence, updated_at) VALUES (${c}, ${k}, 1, CURRENT_TIMESTAMP) ` +
        'ON CONFLICT (consumer, event_key) DO UPDATE SET sequence = COALESCE(o.sequence, 0) + 1, updated_at = CURRENT_TIMESTAMP RETURNING sequence',
      [stream, key],
    )) as Row[];
    return Number(rows[0].sequence);
  }

  private placeholders(count: number): string {
    return Array.from({ length: count }, (_, i) => (this.dialect === 'postgres' ? `$${i + 1}` : '?')).join(', ');
  }
}

/** MySQL/MariaDB refuse a value longer than its column (TEXT holds 65,535 bytes). */
function isDataTooLong(error: unknown): boolean {
  const driverError = driverErrorOf(error);
  return driverError?.code === 'ER_DATA_TOO_LONG' || driverError?.errno === 1406;
}
