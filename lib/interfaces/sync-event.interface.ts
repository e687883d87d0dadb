/** The JSON body of every event on the wire (DESIGN §3). */
export interface SyncEvent<T = unknown> {
  eventId: string;
  eventType: string;
  data: T;
  /** ISO-8601. */
  timestamp: string;
  /** The publishing service. */
  source: string;
  key?: string;
  sequence?: number;
  correlationId?: string;
  causationId?: string;
}
