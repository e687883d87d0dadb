import { AsyncLocalStorage } from 'node:async_hooks';
import type { DataSource, EntityManager } from 'typeorm';

/** A transaction whose publishes go to the outbox: `SyncPublisher.transaction()` or a handler's dedupe transaction. */
export interface OutboxScope {
  readonly dataSource: DataSource;
  readonly manager: EntityManager;
  /** Outbox writes started in the scope; all must finish before it commits. */
  readonly writes: Promise<unknown>[];
  /** Why the scope takes no more writes (a handler run that is over), if so. */
  readonly closed?: () => Error | undefined;
}

const storage = new AsyncLocalStorage<OutboxScope>();

/** The scope the caller runs in, if it belongs to this DataSource. */
export function currentScope(dataSource: DataSource): OutboxScope | undefined {
  const scope = storage.getStore();
  return scope?.dataSource === dataSource ? scope : undefined;
}

/**
 * Runs `work` so that publishes made anywhere below it (however deep, through any await) are
 * written with `manager`, then waits for those writes: a write that fails fails the work, so
 * the transaction rolls back instead of committing without its event.
 */
export async function runInScope<T>(
  dataSource: DataSource,
  manager: EntityManager,
  work: () => Promise<T>,
  closed?: () => Error | undefined,
): Promise<{ result: T; written: number }> {
  const scope: OutboxScope = { dataSource, manager, writes: [], closed };
  const result = await storage.run(scope, work);
  // A write may start another (a sync @PublishesEvent method's tracked publish): wait until none is left.
  for (let settled = 0; settled < scope.writes.length; ) {
    const batch = scope.writes.slice(settled);
    settled = scope.writes.length;
    await Promise.all(batch);
  }
  return { result, written: scope.writes.length };
}
