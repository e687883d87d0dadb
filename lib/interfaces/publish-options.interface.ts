export interface PublishOptions {
  key?: string;
  /** Defaults to a new UUID. Reuse one to make a republish a no-op for consumers. */
  eventId?: string;
  correlationId?: string;
  causationId?: string;
  headers?: Record<string, string | number | boolean>;
}
