export interface PublishOptions {
  key?: string;
  /** Position of this event within its key: a positive integer that grows with every change of the key. */
  sequence?: number;
  /** Defaults to a new UUID. Reuse one to make a republish a no-op for consumers. */
  eventId?: string;
  correlationId?: string;
  causationId?: string;
  headers?: Record<string, string | number | boolean>;
}
