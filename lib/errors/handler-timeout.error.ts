/**
 * A handler run took longer than its `handlerTimeout`: the run counts as failed, its
 * transaction is rolled back and the event goes the retry way. The run itself may still be going
 * on (JavaScript cannot stop it): `ctx.signal` is aborted, and its later database writes and
 * publishes through `ctx` are refused.
 */
export class HandlerTimeoutError extends Error {
  constructor(
    readonly handler: string,
    readonly timeoutMs: number,
  ) {
    super(
      `${handler} did not finish within ${timeoutMs} ms (handlerTimeout): its transaction was rolled back and the event ` +
        'goes the retry way. Make the handler faster, stop it when ctx.signal aborts, or raise handlerTimeout.',
    );
    this.name = 'HandlerTimeoutError';
  }
}

/** A timed-out run used `ctx` after its transaction was rolled back. */
export class HandlerRunOverError extends Error {
  constructor(handler: string) {
    super(`${handler}: this run of the handler is over (it timed out or already returned), so ctx.manager and publishing through its transaction are closed.`);
    this.name = 'HandlerRunOverError';
  }
}
