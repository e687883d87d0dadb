import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

@Entity('audit_entries')
export class AuditEntry {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column('varchar', { length: 64 })
  eventId!: string;

  @Column('varchar', { length: 100 })
  eventType!: string;

  @Column('varchar', { length: 36 })
  userId!: string;

  /** The run that succeeded: 2 means one failure before. */
  @Column('int')
  attempt!: number;

  @CreateDateColumn()
  recordedAt!: Date;
}
