/** A delivered message once parsed: the envelope's fields plus where its id came from. */
export interface IncomingEvent {
  eventId: string;
  /** `envelope` (the publisher set it), `messageId` (the AMQP property), or `hash` (of the body). */
  idSource: 'envelope' | 'messageId' | 'hash';
  eventType: string;
  data: unknown;
  timestamp?: string;
  source?: string;
  key?: string;
  sequence?: number;
  correlationId?: string;
  causationId?: string;
  attempt: number;
  headers: Record<string, unknown>;
}
