import { Injectable } from '@nestjs/common';

export interface SyncCounters {
  /** Events confirmed by the broker. */
  published: number;
  /** Confirmed events no queue was bound for (returned by the broker as unroutable). */
  unroutable: number;
  /** Publishes that were not confirmed (timeout, nack, buffer full). */
  publishFailed: number;
  /** Handler runs that committed. */
  handled: number;
  /** Deliveries skipped because the consumer had already processed the event id. */
  duplicates: number;
  /** Failed runs sent to a retry queue. */
  retried: number;
  /** Messages sent to a dead-letter queue (any reason). */
  deadLettered: number;
  /** Messages that could not be parsed or lacked eventType (a subset of deadLettered). */
  malformed: number;
  /** Events that arrived through a binding the handler no longer subscribes to (binding removed, acked). */
  unsubscribed: number;
  /** Events skipped by `ordering: 'key'` because their sequence was not newer than the last applied. */
  stale: number;
  /** Events written to the outbox (in a transaction that may still roll back). */
  outboxWritten: number;
  /** Outbox rows the relay published and the broker confirmed. */
  outboxRelayed: number;
  /** Outbox publishes that failed and wait to be retried. */
  outboxRelayFailed: number;
}

/** In-process counters of what happened to events; read them for health checks and tests. */
@Injectable()
export class SyncMetrics {
  private readonly counters = emptyCounters();
  private readonly perConsumer = new Map<string, SyncCounters>();

  increment(counter: keyof SyncCounters, consumer?: string): void {
    this.counters[counter] += 1;
    if (consumer) {
      let counters = this.perConsumer.get(consumer);
      if (!counters) {
        counters = emptyCounters();
        this.perConsumer.set(consumer, counters);
      }
      counters[counter] += 1;
    }
  }

  /** A copy of the counters, for all consumers or for one. */
  snapshot(consumer?: string): SyncCounters {
    const source = consumer ? this.perConsumer.get(consumer) : this.counters;
    return { ...(source ?? emptyCounters()) };
  }
}

function emptyCounters(): SyncCounters {
  return { published: 0, unroutable: 0, publishFailed: 0, handled: 0, duplicates: 0, retried: 0, deadLettered: 0, malformed: 0, unsubscribed: 0, stale: 0, outboxWritten: 0, outboxRelayed: 0, outboxRelayFailed: 0 };
}
