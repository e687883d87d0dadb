import type { DataSource } from 'typeorm';

export type Dialect = 'postgres' | 'mysql' | 'sqlite';

/**
 * An event id or key the library's tables can hold: 1–200 characters (their varchar(200)
 * columns), no NUL (PostgreSQL text refuses it).
 */
export function isStorableId(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= 200 && !value.includes('\u0000');
}

/** The SQL family of a TypeORM driver type; throws for databases this library does not support. */
export function dialectOf(type: DataSource['options']['type']): Dialect {
  switch (type) {
    case 'postgres':
    case 'cockroachdb':
      return 'postgres';
    case 'mysql':
    case 'mariadb':
      return 'mysql';
    case 'better-sqlite3':
      return 'sqlite';
    default:
      throw new Error(
        `nestjs-event-sync stores processed events on PostgreSQL, MySQL/MariaDB or SQLite; the DataSource is "${type}".`,
      );
  }
}

const UNIQUE_VIOLATION: Record<Dialect, (error: Record<string, unknown>) => boolean> = {
  postgres: (e) => e.code === '23505',
  mysql: (e) => e.code === 'ER_DUP_ENTRY' || e.errno === 1062,
  sqlite: (e) => typeof e.code === 'string' && e.code.startsWith('SQLITE_CONSTRAINT'),
};

/** The driver's own error (its `code`, `errno`) behind TypeORM's QueryFailedError, or the error itself. */
export function driverErrorOf(error: unknown): Record<string, unknown> | undefined {
  if (!error || typeof error !== 'object') return undefined;
  const driverError = (error as { driverError?: unknown }).driverError ?? error;
  return typeof driverError === 'object' && driverError !== null ? (driverError as Record<string, unknown>) : undefined;
}

/** True when a query failed because the primary key already exists. */
export function isUniqueViolation(dialect: Dialect, error: unknown): boolean {
  const driverError = driverErrorOf(error);
  return driverError !== undefined && UNIQUE_VIOLATION[dialect](driverError);
}

const TRANSIENT_CONFLICT: Record<Dialect, (error: Record<string, unknown>) => boolean> = {
  // deadlock_detected, serialization_failure
  postgres: (e) => e.code === '40P01' || e.code === '40001',
  // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
  mysql: (e) => e.errno === 1213 || e.errno === 1205 || e.code === 'ER_LOCK_DEADLOCK' || e.code === 'ER_LOCK_WAIT_TIMEOUT',
  sqlite: (e) => e.code === 'SQLITE_BUSY' || e.code === 'SQLITE_LOCKED',
};

/** True when the database gave up on a transaction because of a lock conflict: running it again is the fix. */
export function isTransientConflict(dialect: Dialect, error: unknown): boolean {
  const driverError = driverErrorOf(error);
  return driverError !== undefined && TRANSIENT_CONFLICT[dialect](driverError);
}

/**
 * The escaped table name of a library entity in this DataSource, with its schema (PostgreSQL
 * `schema` option) or database prefix, for the library's hand-written statements.
 */
export function tableOf(dataSource: DataSource, entity: Function, fallback: string): string {
  const path = dataSource.hasMetadata(entity) ? dataSource.getMetadata(entity).tablePath : fallback;
  return path
    .split('.')
    .map((part) => dataSource.driver.escape(part))
    .join('.');
}

/** SQL for the moment `ms` milliseconds ago, on the database's own clock. */
export function timeAgo(dialect: Dialect, ms: number): string {
  const seconds = Math.floor(ms / 1000);
  return {
    postgres: `now() - make_interval(secs => ${seconds})`,
    mysql: `NOW(6) - INTERVAL ${seconds} SECOND`,
    sqlite: `datetime('now', '-${seconds} seconds')`,
  }[dialect];
}
