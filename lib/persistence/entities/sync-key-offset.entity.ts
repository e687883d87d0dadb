import { Column, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';

/**
 * The last sequence a consumer with `ordering: 'key'` applied for each event key. Written in
 * the same transaction as the dedupe row and the handler's writes.
 */
@Entity({ name: 'sync_key_offsets' })
export class SyncKeyOffset {
  @PrimaryColumn({ type: 'varchar', length: 200, primaryKeyConstraintName: 'PK_sync_key_offsets' })
  consumer!: string;

  @PrimaryColumn({ name: 'event_key', type: 'varchar', length: 200, primaryKeyConstraintName: 'PK_sync_key_offsets' })
  key!: string;

  /** Null until the first event of the key is applied. */
  @Column({ type: 'bigint', nullable: true, transformer: { to: (value: number | null) => value, from: (value: string | null) => (value === null ? null : Number(value)) } })
  sequence!: number | null;

  @UpdateDateColumn({ name: 'updated_at' })
  updatedAt!: Date;
}
