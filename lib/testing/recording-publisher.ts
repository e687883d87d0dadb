import { bindPublisher, type EventEmitterPort } from '../decorators/publishes-event.decorator.js';
import type { PublishOptions } from '../interfaces/publish-options.interface.js';
import type { PublishesEventMetadata } from '../interfaces/publishes-event-options.interface.js';
import type { EntityManager } from 'typeorm';
import type { SyncEvent } from '../interfaces/sync-event.interface.js';
import { buildEnvelope } from '../publisher/envelope.js';

/**
 * An in-memory stand-in for SyncPublisher in unit tests: records envelopes instead of sending
 * them. Use `provide: SyncPublisher, useValue: new RecordingPublisher()` in a testing module,
 * or `recordPublishedEvents(instance)` for a class built with `new`.
 */
export class RecordingPublisher implements EventEmitterPort {
  readonly events: SyncEvent[] = [];
  private pending?: SyncEvent[];

  /** `manager` is what `transaction(work)` hands to `work` (a test double or a real EntityManager). */
  constructor(
    private readonly service = 'test',
    private readonly manager?: EntityManager,
  ) {}

  async publish<T>(eventType: string, data: T, options: PublishOptions = {}): Promise<SyncEvent<T>> {
    const envelope = buildEnvelope(this.service, eventType, data, options);
    (this.pending ?? this.events).push(envelope);
    return envelope;
  }

  /** Like SyncPublisher.transaction: events published inside are recorded if `work` resolves, dropped if it throws. */
  async transaction<T>(work: (manager: EntityManager) => Promise<T>): Promise<T> {
    if (this.pending) return work(this.manager as EntityManager);
    this.pending = [];
    try {
      const result = await work(this.manager as EntityManager);
      this.events.push(...this.pending);
      return result;
    } finally {
      this.pending = undefined;
    }
  }

  publishResult(metadata: PublishesEventMetadata, result: unknown, args: unknown[]): Promise<unknown> {
    const key = metadata.options.key?.(result, args);
    const sequence = metadata.options.sequence?.(result, args);
    const data = metadata.options.map ? metadata.options.map(result, args) : result;
    return this.publish(metadata.eventType, data, { key: key === undefined ? undefined : String(key), sequence: sequence ?? undefined });
  }

  track(pending: Promise<unknown>): void {
    void pending;
  }

  /** The recorded events of one type. */
  ofType<T = unknown>(eventType: string): SyncEvent<T>[] {
    return this.events.filter((event) => event.eventType === eventType) as SyncEvent<T>[];
  }
}

/** Makes an instance's @PublishesEvent methods record into the returned publisher. */
export function recordPublishedEvents(instance: object, service?: string): RecordingPublisher {
  const recorder = new RecordingPublisher(service);
  bindPublisher(instance, recorder);
  return recorder;
}
