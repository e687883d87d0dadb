/** The broker did not confirm a publish within `publishTimeout`; the event may not have been sent. */
export class PublishTimeoutError extends Error {
  constructor(
    readonly eventType: string,
    readonly eventId: string,
    timeoutMs: number,
  ) {
    super(
      `Event ${eventType} ${eventId} was not confirmed by RabbitMQ within ${timeoutMs} ms (publishTimeout): ` +
        `the broker is unreachable or overloaded. The event may or may not have reached it; to retry, publish it ` +
        `again with the same eventId (error.eventId) so consumers apply it at most once.`,
    );
    this.name = 'PublishTimeoutError';
  }
}
