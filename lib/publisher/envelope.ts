import type { Options } from 'amqplib';
import { InvalidEventDataError } from '../errors/invalid-event-data.error.js';
import type { PublishOptions } from '../interfaces/publish-options.interface.js';
import type { SyncEvent } from '../interfaces/sync-event.interface.js';
import { isStorableId } from '../persistence/dialect.js';
import { HEADER, KEY_BUCKETS } from '../sync.constants.js';
import { newEventId } from './event-id.js';

/** Builds the wire envelope of DESIGN §3. */
export function buildEnvelope<T>(source: string, eventType: string, data: T, options: PublishOptions = {}): SyncEvent<T> {
  const envelope: SyncEvent<T> = {
    eventId: options.eventId ?? newEventId(),
    eventType,
    data,
    timestamp: new Date().toISOString(),
    source,
  };
  if (options.key !== undefined) envelope.key = assertKey(String(options.key), eventType);
  if (options.sequence !== undefined) envelope.sequence = assertSequence(options.sequence, eventType);
  if (options.correlationId !== undefined) envelope.correlationId = options.correlationId;
  if (options.causationId !== undefined) envelope.causationId = options.causationId;
  return envelope;
}

/**
 * AMQP properties that repeat the envelope, so tools can route and inspect without parsing. A
 * message with no headers carries no header table (consumers read a missing table as empty).
 */
export function publishPropertiesOf(envelope: SyncEvent, headers?: PublishOptions['headers']): Options.Publish {
  const properties: Options.Publish = {
    persistent: true,
    mandatory: true,
    contentType: 'application/json',
    messageId: envelope.eventId,
    type: envelope.eventType,
    appId: envelope.source,
    timestamp: Math.floor(Date.parse(envelope.timestamp) / 1000),
  };
  if (envelope.correlationId !== undefined) properties.correlationId = envelope.correlationId;
  if (envelope.key !== undefined) properties.headers = { ...headers, [HEADER.keyBucket]: String(keyBucket(envelope.key)) };
  else if (headers && Object.keys(headers).length > 0) properties.headers = { ...headers };
  return properties;
}

/**
 * The bucket of an event key, 0–255: FNV-1a (32-bit) of its UTF-8 bytes, modulo 256. Partitioned
 * consumers route on it (header `sync-key-bucket`); a foreign producer that wants its events
 * spread over partitions sets the same header.
 */
export function keyBucket(key: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(key, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % KEY_BUCKETS;
}

/** The envelope as it goes on the wire; data JSON cannot carry is refused with a typed error. */
export function serializeEnvelope(envelope: SyncEvent): Buffer {
  return Buffer.from(envelopeJson(envelope));
}

export function envelopeJson(envelope: SyncEvent): string {
  try {
    return JSON.stringify(envelope);
  } catch (error) {
    throw new InvalidEventDataError(envelope.eventType, error);
  }
}

/** A key is stored by consumers with `ordering: 'key'` and by the outbox: 1–200 characters, no NUL. */
function assertKey(key: string, eventType: string): string {
  const { length } = key;
  if (isStorableId(key)) return key;
  throw new InvalidEventDataError(eventType, new Error(`key must be 1 to 200 characters without NUL (got ${length} characters)`));
}

/** A sequence is a positive safe integer; anything else would compare wrongly at the consumer. */
function assertSequence(sequence: unknown, eventType: string): number {
  if (typeof sequence !== 'number' || !Number.isSafeInteger(sequence) || sequence < 1) {
    throw new InvalidEventDataError(eventType, new Error(`sequence must be a positive integer (got ${JSON.stringify(sequence)})`));
  }
  return sequence;
}
