/** The broker refused a publish (a nack, or the channel failed before it confirmed). */
export class PublishRejectedError extends Error {
  constructor(
    readonly eventType: string,
    readonly eventId: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`Event ${eventType} ${eventId} was rejected by RabbitMQ: ${reason}`, options);
    this.name = 'PublishRejectedError';
  }
}
