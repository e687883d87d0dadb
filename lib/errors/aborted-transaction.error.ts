/**
 * The handler caught a database error and carried on, but PostgreSQL had already aborted the
 * transaction: committing it would silently roll everything back, so the run fails instead.
 */
export class AbortedTransactionError extends Error {
  constructor(consumer: string, eventId: string, cause: unknown) {
    super(
      `${consumer} finished event ${eventId}, but its transaction had been aborted by an earlier failed query ` +
        `that the handler caught, so none of its writes (nor the processed mark) would be committed. Let database ` +
        `errors propagate, or run the statement that may fail inside a savepoint (ctx.manager.transaction(...)).`,
      { cause },
    );
    this.name = 'AbortedTransactionError';
  }
}
