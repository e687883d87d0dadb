import { Column, CreateDateColumn, Entity, Index, PrimaryColumn, type ValueTransformer } from 'typeorm';

/** bigint columns come back as strings from some drivers; ids and times here fit a JS number. */
const bigintAsNumber: ValueTransformer = {
  to: (value: number | null | undefined) => value,
  from: (value: string | number | null) => (value === null || value === undefined ? value : Number(value)),
};

/**
 * One event waiting to be published (or published, until pruned). Written in the same
 * transaction as the business change that caused it; the relay publishes it after commit.
 */
@Entity({ name: 'sync_outbox' })
@Index('IDX_sync_outbox_pending', ['source', 'publishedAt', 'position'])
@Index('IDX_sync_outbox_published_at', ['publishedAt'])
export class SyncOutboxMessage {
  @PrimaryColumn({ name: 'event_id', type: 'varchar', length: 200, primaryKeyConstraintName: 'PK_sync_outbox' })
  eventId!: string;

  /**
   * Write order: microseconds since the epoch, strictly increasing within a process. The relay
   * publishes unpublished rows in this order and scans all of them on every cycle (never from a
   * high-water mark), so a row whose transaction commits late is never skipped.
   */
  @Column({ type: 'bigint', transformer: bigintAsNumber })
  position!: number;

  @Column({ name: 'event_type', type: 'varchar', length: 200 })
  eventType!: string;

  /** The publishing service (the envelope's `source`): each service's relay publishes only its own rows. */
  @Column({ type: 'varchar', length: 200 })
  source!: string;

  @Column({ name: 'routing_key', type: 'varchar', length: 255 })
  routingKey!: string;

  @Column({ name: 'event_key', type: 'varchar', length: 200, nullable: true })
  key!: string | null;

  /** The envelope exactly as it goes on the wire (JSON). */
  @Column({ type: 'text' })
  payload!: string;

  /** AMQP headers as JSON, or null. */
  @Column({ type: 'text', nullable: true })
  headers!: string | null;

  @CreateDateColumn({ name: 'created_at' })
  createdAt!: Date;

  @Column({ name: 'published_at', type: Date, nullable: true })
  publishedAt!: Date | null;

  /** Publish attempts so far (the successful one included). */
  @Column({ type: 'int', default: 0 })
  attempts!: number;

  /** Epoch milliseconds before which the relay leaves a failed row alone (backoff); null when due. */
  @Column({ name: 'next_attempt_at', type: 'bigint', nullable: true, transformer: bigintAsNumber })
  nextAttemptAt!: number | null;

  @Column({ name: 'last_error', type: 'text', nullable: true })
  lastError!: string | null;
}
