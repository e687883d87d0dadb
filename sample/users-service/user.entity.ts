import { Column, Entity, PrimaryColumn, VersionColumn } from 'typeorm';

@Entity('users')
export class User {
  @PrimaryColumn('varchar', { length: 36 })
  id!: string;

  @Column('varchar', { length: 200 })
  name!: string;

  @Column('varchar', { length: 320 })
  email!: string;

  /** Travels with every event so consumers can ignore an older state that arrives late. */
  @VersionColumn()
  version!: number;
}
