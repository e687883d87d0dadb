import type { DataSource } from 'typeorm';

export type Dialect = 'postgres' | 'mysql' | 'sqlite';

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

/** True when a query failed because the primary key already exists. */
export function isUniqueViolation(dialect: Dialect, error: unknown): boolean {
  if (!error || typeof error !== 'object') return false;
  const driverError = (error as { driverError?: unknown }).driverError ?? error;
  return typeof driverError === 'object' && driverError !== null && UNIQUE_VIOLATION[dialect](driverError as Record<string, unknown>);
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
  if (!error || typeof error !== 'object') return false;
  const driverError = (error as { driverError?: unknown }).driverError ?? error;
  return typeof driverError === 'object' && driverError !== null && TRANSIENT_CONFLICT[dialect](driverError as Record<string, unknown>);
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
