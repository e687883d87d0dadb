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
