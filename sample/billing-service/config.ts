import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TypeOrmModuleOptions } from '@nestjs/typeorm';

/** SQLite files live in sample/data/ (this file runs from sample/dist/<service>/). */
const DATA_DIR = process.env.SQLITE_DIR ?? fileURLToPath(new URL('../../data/', import.meta.url));

export const config = {
  port: Number(process.env.PORT ?? 3002),
  amqpUrl: process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
  exchange: process.env.SYNC_EXCHANGE || undefined,
};

/** PostgreSQL when DATABASE_URL is set, else a SQLite file of this service's own. */
export function databaseOptions(file: string): TypeOrmModuleOptions {
  // synchronize keeps the sample self-contained; production runs migrations (SYNC_MIGRATIONS and its own).
  const common = { autoLoadEntities: true, synchronize: true } as const;
  if (process.env.DATABASE_URL) return { type: 'postgres', url: process.env.DATABASE_URL, ...common };
  mkdirSync(DATA_DIR, { recursive: true });
  return { type: 'better-sqlite3', database: join(DATA_DIR, file), ...common };
}
