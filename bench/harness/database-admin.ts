import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SYNC_MIGRATIONS } from 'nestjs-event-sync';
import { DataSource, EntitySchema } from 'typeorm';
import { usersEntityOptions } from '../workers/runtime/events.js';
import type { DatabaseConfig, ScenarioId } from '../workers/runtime/protocol.js';
import { SCENARIOS } from './scenarios.js';

/**
 * The run's own PostgreSQL schema (every table of the run lives in it, the library's dedupe
 * and outbox tables included, so nothing outside it is touched) and its own SQLite file.
 * Tables are created here once, before any worker starts: the library's through the
 * migrations it ships (as in production), the users tables by TypeORM. Workers never
 * synchronize. Every PostgreSQL connection of the run has `search_path` set to the schema, so
 * unqualified SQL lands there too.
 */
export class DatabaseAdmin {
  private constructor(
    readonly postgres: DataSource,
    readonly sqlite: DataSource | undefined,
    readonly schema: string,
    private readonly sqliteDir: string | undefined,
    readonly postgresUrl: string,
  ) {}

  static async create(postgresUrl: string, schema: string, scenarios: ScenarioId[]): Promise<DatabaseAdmin> {
    const bootstrap = new DataSource({ type: 'postgres', url: postgresUrl });
    await bootstrap.initialize();
    await bootstrap.query(`CREATE SCHEMA "${schema}"`);
    await bootstrap.destroy();

    const url = withSearchPath(postgresUrl, schema);
    const pgUsers = scenarios.filter((id) => SCENARIOS[id].database === 'postgres').map((id) => usersSchema(id, 'postgres'));
    const postgres = new DataSource({ type: 'postgres', url, schema, entities: pgUsers, migrations: SYNC_MIGRATIONS, migrationsRun: true, synchronize: true, logging: false });
    let sqlite: DataSource | undefined;
    let sqliteDir: string | undefined;
    const admin = () => new DatabaseAdmin(postgres, sqlite, schema, sqliteDir, url);
    try {
      await postgres.initialize();
      if (scenarios.includes('e')) {
        sqliteDir = mkdtempSync(join(tmpdir(), 'nestjs-event-sync-bench-'));
        sqlite = new DataSource({ type: 'better-sqlite3', database: join(sqliteDir, 'bench.sqlite'), entities: [usersSchema('e', 'sqlite')], migrations: SYNC_MIGRATIONS, migrationsRun: true, synchronize: true, logging: false });
        await sqlite.initialize();
      }
    } catch (error) {
      await admin().drop();
      throw error;
    }
    return admin();
  }

  config(id: ScenarioId): DatabaseConfig {
    if (SCENARIOS[id].database === 'sqlite') return { type: 'sqlite', path: String(this.sqlite!.options.database) };
    return { type: 'postgres', url: this.postgresUrl, schema: this.schema };
  }

  get postgresConfig(): DatabaseConfig {
    return { type: 'postgres', url: this.postgresUrl, schema: this.schema };
  }

  /** Empties the scenario's tables (and the library's, for d–i), so every round starts from the same state. */
  async reset(id: ScenarioId): Promise<void> {
    if (SCENARIOS[id].database === 'sqlite') {
      const rows: Array<{ name: string }> = await this.sqlite!.query(`SELECT name FROM sqlite_master WHERE type = 'table'`);
      for (const { name } of rows) if (name === `users_${id}` || isLibraryTable(name)) await this.sqlite!.query(`DELETE FROM "${name}"`);
      return;
    }
    const rows: Array<{ tablename: string }> = await this.postgres.query('SELECT tablename FROM pg_tables WHERE schemaname = $1', [this.schema]);
    const tables = rows.map((row) => row.tablename).filter((table) => table === `users_${id}` || (SCENARIOS[id].library && isLibraryTable(table)));
    await this.postgres.query(`TRUNCATE ${tables.map((table) => `"${this.schema}"."${table}"`).join(', ')}`);
  }

  /**
   * Fills the dedupe table with `rows` rows of earlier events of `consumer`, one every 100 ms
   * back from now, as a table holding days of processed events does: ids of the kind the
   * scenario publishes (UUIDv7, time-ordered, from the time of the row; or random UUIDv4).
   * Then VACUUM ANALYZE, as autovacuum would have by then, and a CHECKPOINT, so every round
   * starts at the same point of PostgreSQL's checkpoint cycle.
   */
  async prefillProcessed(consumer: string, rows: number, ids: 'v7' | 'v4'): Promise<void> {
    const table = `"${this.schema}"."sync_processed_events"`;
    const at = `now() - interval '100 ms' * ($2::bigint - i)`;
    const eventId =
      ids === 'v4'
        ? 'gen_random_uuid()::text'
        : // The UUIDv7 layout: 48 bits of milliseconds, version 7, 12 random bits, variant 10, 62 random bits.
          `substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 1, 3) || '-' || substr('89ab', 1 + (get_byte(decode(substr(r, 4, 2), 'hex'), 0) & 3), 1) || substr(r, 6, 3) || '-' || substr(r, 9, 12)`;
    await this.postgres.query(
      `INSERT INTO ${table} (consumer, event_id, processed_at)
       SELECT $1, ${eventId}, at FROM (
         SELECT at, lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') AS h, md5(random()::text) AS r
         FROM (SELECT ${at} AS at FROM generate_series(1, $2::bigint) AS i) AS times) AS parts`,
      [consumer, rows],
    );
    await this.postgres.query(`VACUUM ANALYZE ${table}`);
    await this.postgres.query('CHECKPOINT');
  }

  /** PostgreSQL's current write-ahead log position. */
  async walPosition(): Promise<string> {
    const [row] = await this.postgres.query('SELECT pg_current_wal_lsn()::text AS lsn');
    return String(row.lsn);
  }

  /** Bytes of write-ahead log the server wrote since `position`. */
  async walBytesSince(position: string): Promise<number> {
    const [row] = await this.postgres.query('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn) AS bytes', [position]);
    return Number(row.bytes);
  }

  /** Rows in the scenario's users table: one per distinct event, whatever was retried. */
  async users(id: ScenarioId): Promise<number> {
    const [row] =
      SCENARIOS[id].database === 'sqlite'
        ? await this.sqlite!.query(`SELECT COUNT(*) AS n FROM "users_${id}"`)
        : await this.postgres.query(`SELECT COUNT(*) AS n FROM "${this.schema}"."users_${id}"`);
    return Number(row.n);
  }

  async versions(): Promise<{ postgres: string; sqlite?: string }> {
    const [pg] = await this.postgres.query('SHOW server_version');
    const sqlite = this.sqlite ? String((await this.sqlite.query('SELECT sqlite_version() AS v'))[0].v) : undefined;
    return { postgres: String(pg.server_version), sqlite };
  }

  /** Drops the run's schema (and everything in it) and removes the SQLite file. */
  async drop(): Promise<void> {
    if (this.postgres.isInitialized) await this.postgres.destroy();
    const cleanup = new DataSource({ type: 'postgres', url: this.postgresUrl });
    await cleanup.initialize();
    try {
      await cleanup.query(`DROP SCHEMA IF EXISTS "${this.schema}" CASCADE`);
    } finally {
      await cleanup.destroy();
    }
    if (this.sqlite?.isInitialized) await this.sqlite.destroy();
    if (this.sqliteDir) rmSync(this.sqliteDir, { recursive: true, force: true });
  }

}

/** The library's tables: all but the users tables, TypeORM's migrations table and SQLite's own. */
function isLibraryTable(table: string): boolean {
  return !table.startsWith('users_') && table !== 'migrations' && !table.startsWith('sqlite_');
}

/** A PostgreSQL URL whose connections use only `schema` for unqualified names. */
export function withSearchPath(url: string, schema: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set('options', `-c search_path=${schema}`);
  return parsed.toString();
}

function usersSchema(id: ScenarioId, dialect: 'postgres' | 'sqlite'): EntitySchema {
  return new EntitySchema({ ...usersEntityOptions(`users_${id}`, dialect), name: `BenchUser_${id}` });
}
