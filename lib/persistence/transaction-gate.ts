import type { DataSource, EntityManager } from 'typeorm';
import type { IsolationLevel } from 'typeorm/driver/types/IsolationLevel.js';
import { type Dialect, dialectOf } from './dialect.js';

/**
 * Where the library opens its transactions. SQLite has a single connection and TypeORM cannot
 * run two transactions on it at once, so there they run one after another; elsewhere each
 * takes its own pooled connection.
 */
export class TransactionGate {
  readonly dialect: Dialect;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly serial: boolean;

  constructor(readonly dataSource: DataSource) {
    this.dialect = dialectOf(dataSource.options.type);
    this.serial = this.dialect === 'sqlite';
  }

  /** Runs `work` alone on SQLite, at once elsewhere. */
  run<T>(work: () => Promise<T>): Promise<T> {
    if (!this.serial) return work();
    const run = this.tail.then(work);
    this.tail = run.catch(() => undefined);
    return run;
  }

  transaction<T>(work: (manager: EntityManager) => Promise<T>, isolation?: IsolationLevel): Promise<T> {
    return this.run(() => (isolation ? this.dataSource.transaction(isolation, work) : this.dataSource.transaction(work)));
  }
}
