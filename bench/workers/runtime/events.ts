import { now } from './clock.js';

/** The event every scenario publishes: about 200 bytes of JSON. */
export interface UserEvent {
  id: string;
  seq: number;
  /** Monotonic clock (ms) when the publish was called: the start of every latency. */
  sentAt: number;
  name: string;
  email: string;
  plan: string;
  country: string;
  bio: string;
}

export interface UserRow {
  id: string;
  name: string;
  email: string;
  plan: string;
  country: string;
  seq: number;
}

const BIO = 'Synced from the users service (benchmark).';

export function userEvent(tag: string, seq: number): UserEvent {
  const n = String(seq).padStart(7, '0');
  return { id: `${tag}-${n}`, seq, sentAt: now(), name: `User ${n}`, email: `user${n}@example.com`, plan: 'pro', country: 'NL', bio: BIO };
}

/** What every handler writes: one upsert of the user's row. */
export function userRow(event: UserEvent): UserRow {
  return { id: event.id, name: event.name, email: event.email, plan: event.plan, country: event.country, seq: event.seq };
}

/** Options of the TypeORM EntitySchema of the users table (each process builds it with its own TypeORM copy). */
export function usersEntityOptions(table: string, dialect: 'postgres' | 'sqlite') {
  return {
    name: 'BenchUser',
    tableName: table,
    columns: {
      id: { type: 'varchar' as const, length: 64, primary: true },
      name: { type: 'varchar' as const, length: 100 },
      email: { type: 'varchar' as const, length: 200 },
      plan: { type: 'varchar' as const, length: 20 },
      country: { type: 'varchar' as const, length: 2 },
      seq: { type: 'integer' as const },
      updatedAt: { type: dialect === 'postgres' ? ('timestamptz' as const) : ('datetime' as const), name: 'updated_at', updateDate: true },
    },
  };
}

/** The same upsert written by hand, as a raw amqplib + pg user would (scenario a). */
export function upsertSql(schema: string, table: string): string {
  return (
    `INSERT INTO "${schema}"."${table}" ("id", "name", "email", "plan", "country", "seq", "updated_at") ` +
    `VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", ` +
    `"email" = EXCLUDED."email", "plan" = EXCLUDED."plan", "country" = EXCLUDED."country", "seq" = EXCLUDED."seq", "updated_at" = now()`
  );
}

export function upsertParams(row: UserRow): unknown[] {
  return [row.id, row.name, row.email, row.plan, row.country, row.seq];
}
