import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TypeOrmModuleOptions } from '@nestjs/typeorm';
import { MARIADB_URL, POSTGRES_URL } from './env.js';

export type Engine = 'postgres' | 'sqlite' | 'mariadb';

export const ENGINES: Engine[] = ['postgres', 'sqlite', 'mariadb'];

/** TypeORM options for one of the real databases; SQLite gets its own file, removed by `cleanup`. */
/** `pipeline`: PostgreSQL connections in pg's pipeline mode (what `@OnEvent({ parallel: true })` needs there). */
export function typeOrmOptions(engine: Engine, entities: Function[], { pipeline = false } = {}): { options: TypeOrmModuleOptions; cleanup: () => void } {
  const common = { entities, synchronize: true, autoLoadEntities: true, logging: false } as const;
  if (engine === 'postgres') return { options: { type: 'postgres', url: POSTGRES_URL, ...common, ...(pipeline ? { extra: { pipeline: true } } : {}) }, cleanup: () => undefined };
  if (engine === 'mariadb') return { options: { type: 'mariadb', url: MARIADB_URL, ...common }, cleanup: () => undefined };
  const dir = mkdtempSync(join(tmpdir(), 'sync-test-'));
  return { options: { type: 'better-sqlite3', database: join(dir, 'db.sqlite'), ...common }, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
