import type { ConsumeMessage } from 'amqplib';
import type { EntityManager } from 'typeorm';
import type { IncomingEvent } from './incoming-event.js';

/**
 * What a handler knows about the event it runs for. `manager` is the TypeORM EntityManager of
 * the transaction that also records the event as processed: write through it and the writes
 * and the dedupe mark commit (or roll back) together.
 */
export class EventContext {
  readonly eventId: string;
  readonly eventType: string;
  readonly key?: string;
  readonly sequence?: number;
  /** ISO-8601, from the envelope (or the AMQP timestamp of a foreign producer). */
  readonly timestamp?: string;
  readonly source?: string;
  readonly correlationId?: string;
  readonly causationId?: string;
  /** 1 on the first run, 2 on the first retry, … */
  readonly attempt: number;
  readonly headers: Readonly<Record<string, unknown>>;
  /** The handler's consumer name. */
  readonly consumer: string;
  /**
   * With `ordering: 'key'`: true when sequences of this key were skipped since the last one
   * applied (events lost, or still on their way and now stale). Last writer wins; a handler that
   * needs every step can reload the state here.
   */
  readonly gap: boolean;
  /** With `ordering: 'key'`: the sequence applied before this one, if any. */
  readonly previousSequence?: number;

  /**
   * Aborted when the run exceeds its `handlerTimeout` (the run has then failed and its
   * transaction is rolled back): pass it to `fetch` and other cancellable calls.
   */
  get signal(): AbortSignal {
    return this.run?.signal ?? NEVER_ABORTED;
  }

  constructor(
    event: IncomingEvent,
    consumer: string,
    readonly manager: EntityManager,
    /** The raw AMQP message, for what the envelope does not carry. */
    readonly message: ConsumeMessage,
    order: { gap: boolean; previousSequence?: number } = { gap: false },
    private readonly run?: { readonly signal: AbortSignal },
  ) {
    this.gap = order.gap;
    this.previousSequence = order.previousSequence;
    this.eventId = event.eventId;
    this.eventType = event.eventType;
    this.key = event.key;
    this.sequence = event.sequence;
    this.timestamp = event.timestamp;
    this.source = event.source;
    this.correlationId = event.correlationId;
    this.causationId = event.causationId;
    this.attempt = event.attempt;
    this.headers = event.headers;
    this.consumer = consumer;
  }
}

const NEVER_ABORTED = new AbortController().signal;
