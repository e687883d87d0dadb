import { CreateDateColumn, Entity, Index, PrimaryColumn } from 'typeorm';

/**
 * One row per event a consumer has processed. Inserted in the same transaction as the
 * handler's writes, so the row exists exactly when the handler's effect does.
 */
@Entity({ name: 'sync_processed_events' })
export class SyncProcessedEvent {
  /** The handler's consumer name (`ClassName.methodName` unless set), not the queue. */
  @PrimaryColumn({ type: 'varchar', length: 200, primaryKeyConstraintName: 'PK_sync_processed_events' })
  consumer!: string;

  @PrimaryColumn({ name: 'event_id', type: 'varchar', length: 200, primaryKeyConstraintName: 'PK_sync_processed_events' })
  eventId!: string;

  @Index('IDX_sync_processed_events_processed_at')
  @CreateDateColumn({ name: 'processed_at' })
  processedAt!: Date;
}

