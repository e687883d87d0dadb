import { Column, Entity, PrimaryColumn } from 'typeorm';

/** Billing's own copy of a user, kept in sync from UserCreated / UserUpdated. */
@Entity('customers')
export class Customer {
  /** The user's id in the users service. */
  @PrimaryColumn('varchar', { length: 36 })
  id!: string;

  @Column('varchar', { length: 200 })
  name!: string;

  @Column('varchar', { length: 320 })
  email!: string;

  /** The user's version this row reflects. */
  @Column('int')
  version!: number;
}
