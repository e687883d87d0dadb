/**
 * PostgreSQL answered a COMMIT with ROLLBACK: a statement had failed earlier in the transaction
 * and was caught, which in PostgreSQL does not undo the failure, so nothing of the transaction
 * was written. Thrown by `SyncPublisher.transaction()` (and inside the consumer, where it becomes
 * an AbortedTransactionError) instead of letting the rollback pass for a commit.
 */
export class CommitRolledBackError extends Error {
  constructor() {
    super(
      'PostgreSQL rolled the transaction back at COMMIT because a statement had failed in it earlier and was caught; ' +
        'nothing of it was written. Let database errors propagate, or run the statement that may fail inside a savepoint (manager.transaction(...)).',
    );
    this.name = 'CommitRolledBackError';
  }
}
