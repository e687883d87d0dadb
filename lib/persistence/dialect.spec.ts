import { dialectOf, isTransientConflict, isUniqueViolation } from './dialect.js';

describe('dialect helpers', () => {
  it('maps driver types to SQL families and refuses others', () => {
    expect(dialectOf('postgres')).toBe('postgres');
    expect(dialectOf('mariadb')).toBe('mysql');
    expect(dialectOf('better-sqlite3')).toBe('sqlite');
    expect(() => dialectOf('mongodb')).toThrow(/PostgreSQL, MySQL\/MariaDB or SQLite/);
  });

  it('recognises a duplicate key per driver, wrapped in QueryFailedError or not', () => {
    expect(isUniqueViolation('postgres', { driverError: { code: '23505' } })).toBe(true);
    expect(isUniqueViolation('mysql', { errno: 1062 })).toBe(true);
    expect(isUniqueViolation('sqlite', { driverError: { code: 'SQLITE_CONSTRAINT_PRIMARYKEY' } })).toBe(true);
    expect(isUniqueViolation('postgres', { driverError: { code: '40P01' } })).toBe(false);
    expect(isUniqueViolation('mysql', new Error('boom'))).toBe(false);
  });

  it('recognises lock conflicts worth running again', () => {
    expect(isTransientConflict('mysql', { driverError: { errno: 1213, code: 'ER_LOCK_DEADLOCK' } })).toBe(true);
    expect(isTransientConflict('postgres', { driverError: { code: '40001' } })).toBe(true);
    expect(isTransientConflict('postgres', { driverError: { code: '23505' } })).toBe(false);
    expect(isTransientConflict('sqlite', undefined)).toBe(false);
  });
});
