/** The broker did not confirm a publish within `publishTimeout`; the event may not have been sent. */
export class PublishTimeoutError extends Error {
  constructor(
    readonly eventType: string,
    readonly eventId: string,
    timeoutMs: number,
  ) {
    super(
      `Event ${eventType} ${eventId} was not confirmed by RabbitMQ within ${timeoutMs} ms ` +
        `(publishTimeout). The broker is unreachable or overloaded; the event was not delivered.`,
    );
    this.name = 'PublishTimeoutError';
  }
}
