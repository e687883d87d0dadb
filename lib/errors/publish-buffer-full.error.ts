/** Too many publishes are already waiting for the broker; refusing keeps memory bounded. */
export class PublishBufferFullError extends Error {
  constructor(
    readonly eventType: string,
    limit: number,
  ) {
    super(
      `Cannot publish ${eventType}: ${limit} publishes are already waiting for RabbitMQ (maxPendingPublishes). ` +
        `The broker is unreachable or slower than the publish rate.`,
    );
    this.name = 'PublishBufferFullError';
  }
}
