/** The event's data cannot travel as JSON (a BigInt, a circular reference, …); nothing was sent. */
export class InvalidEventDataError extends Error {
  constructor(
    readonly eventType: string,
    cause: unknown,
  ) {
    super(
      `Cannot publish ${eventType}: its data cannot be serialised to JSON (${cause instanceof Error ? cause.message : String(cause)}). ` +
        `Publish plain data: map BigInts to strings and drop circular references (the map option of @PublishesEvent helps).`,
      { cause },
    );
    this.name = 'InvalidEventDataError';
  }
}
