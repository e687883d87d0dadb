/** The broker refused a publish (a nack, or the channel failed before it confirmed). */
export class PublishRejectedError extends Error {
  constructor(
    readonly eventType: string,
    readonly eventId: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `Event ${eventType} ${eventId} was not confirmed by RabbitMQ: ${reason}. If the channel closed, the event may still ` +
        `have reached the broker; to retry, publish it again with the same eventId (error.eventId).`,
      options,
    );
    this.name = 'PublishRejectedError';
  }
}
