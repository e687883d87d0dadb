import type { AfterQueryEvent, DataSource, EntityManager, EntitySubscriberInterface, QueryRunner } from 'typeorm';
import type { IsolationLevel } from 'typeorm/driver/types/IsolationLevel.js';
import { CommitRolledBackError } from '../errors/commit-rolled-back.error.js';
import { type Dialect, dialectOf } from './dialect.js';

/**
 * Sees each COMMIT's command tag, through TypeORM's own query events: PostgreSQL tags the COMMIT
 * of an aborted transaction `ROLLBACK` and reports no error, so this is the one place it shows.
 */
class CommitWatch implements EntitySubscriberInterface {
  private readonly rolledBack = new WeakSet<QueryRunner>();

  afterQuery(event: AfterQueryEvent): void {
    if (event.query === 'COMMIT' && event.success && event.rawResults?.command === 'ROLLBACK') this.rolledBack.add(event.queryRunner);
  }

  /** Whether the last COMMIT on `runner` rolled back (and forgets it). */
  take(runner: QueryRunner): boolean {
    return this.rolledBack.delete(runner);
  }
}

const watches = new WeakMap<DataSource, CommitWatch>();

function commitWatchOf(dataSource: DataSource): CommitWatch {
  let watch = watches.get(dataSource);
  if (!watch) {
    watch = new CommitWatch();
    watches.set(dataSource, watch);
    dataSource.subscribers.push(watch);
  }
  return watch;
}

/**
 * Where the library opens its transactions. SQLite has a single connection and TypeORM cannot
 * run two transactions on it at once, so there they run one after another; elsewhere each
 * takes its own pooled connection. On PostgreSQL a COMMIT that the server turned into a
 * rollback fails the transaction with CommitRolledBackError instead of passing for a commit.
 */
export class TransactionGate {
  readonly dialect: Dialect;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly serial: boolean;
  private readonly commits?: CommitWatch;

  constructor(readonly dataSource: DataSource) {
    this.dialect = dialectOf(dataSource.options.type);
    this.serial = this.dialect === 'sqlite';
    if (this.dialect === 'postgres') this.commits = commitWatchOf(dataSource);
  }

  /** Runs `work` alone on SQLite, at once elsewhere. */
  run<T>(work: () => Promise<T>): Promise<T> {
    if (!this.serial) return work();
    const run = this.tail.then(work);
    this.tail = run.catch(() => undefined);
    return run;
  }

  transaction<T>(work: (manager: EntityManager) => Promise<T>, isolation?: IsolationLevel): Promise<T> {
    const { commits } = this;
    if (!commits) return this.run(() => (isolation ? this.dataSource.transaction(isolation, work) : this.dataSource.transaction(work)));
    let runner: QueryRunner | undefined;
    const watched = (manager: EntityManager) => {
      runner = manager.queryRunner;
      return work(manager);
    };
    return this.run(async () => {
      const result = await (isolation ? this.dataSource.transaction(isolation, watched) : this.dataSource.transaction(watched));
      if (runner && commits.take(runner)) throw new CommitRolledBackError();
      return result;
    });
  }
}
