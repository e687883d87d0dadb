import { createHash } from 'node:crypto';
import type { ConsumeMessage } from 'amqplib';
import { isStorableId } from '../persistence/dialect.js';
import { HEADER } from '../sync.constants.js';
import type { IncomingEvent } from './incoming-event.js';

export type ParseResult = { ok: true; event: IncomingEvent } | { ok: false; reason: 'malformed'; message: string };

/** `application/json`, `text/json` and `application/<anything>+json`, with parameters such as a charset. */
const JSON_CONTENT_TYPE = /^\s*(application\/(json|[\w.+-]+\+json)|text\/json)\s*(;.*)?$/i;
const PLAIN_ENCODING = /^\s*(identity|utf-?8)\s*$/i;

/** Reads the delivery count we carry ourselves (never x-death): 1 when absent or unreadable. */
export function attemptOf(message: ConsumeMessage): number {
  const raw = message.properties.headers?.[HEADER.attempt];
  const attempt = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d{1,9}$/.test(raw) ? Number(raw) : Number.NaN;
  return Number.isSafeInteger(attempt) && attempt >= 1 ? attempt : 1;
}

/**
 * Parses a delivery into an event, or says why it is malformed. Accepts our envelope and a
 * plain foreign `{ eventType, data, timestamp }`: its id is then the AMQP messageId, or else a
 * hash of the body.
 */
export function parseMessage(message: ConsumeMessage): ParseResult {
  const { contentType, contentEncoding } = message.properties;
  if (contentType !== undefined && !(typeof contentType === 'string' && JSON_CONTENT_TYPE.test(contentType))) {
    return { ok: false, reason: 'malformed', message: `content type ${JSON.stringify(contentType)} is not JSON (expected application/json, or none)` };
  }
  if (contentEncoding !== undefined && !(typeof contentEncoding === 'string' && PLAIN_ENCODING.test(contentEncoding))) {
    return { ok: false, reason: 'malformed', message: `content encoding ${JSON.stringify(contentEncoding)} is not supported (send plain UTF-8 JSON)` };
  }
  let body: unknown;
  try {
    body = JSON.parse(message.content.toString('utf8'));
  } catch (error) {
    return { ok: false, reason: 'malformed', message: `body is not valid JSON (${(error as Error).message})` };
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { ok: false, reason: 'malformed', message: 'body is not a JSON object' };
  }
  const envelope = body as Record<string, unknown>;
  if (typeof envelope.eventType !== 'string' || envelope.eventType.length === 0) {
    return { ok: false, reason: 'malformed', message: 'body has no string eventType' };
  }
  const { properties } = message;
  const [eventId, idSource] = idOf(envelope.eventId, properties.messageId, message.content);
  return {
    ok: true,
    event: {
      eventId,
      idSource,
      eventType: envelope.eventType,
      data: envelope.data,
      timestamp: stringOr(envelope.timestamp) ?? (typeof properties.timestamp === 'number' ? new Date(properties.timestamp * 1000).toISOString() : undefined),
      source: stringOr(envelope.source) ?? stringOr(properties.appId),
      key: stringOr(envelope.key) ?? (typeof envelope.key === 'number' ? String(envelope.key) : undefined),
      sequence: typeof envelope.sequence === 'number' && Number.isFinite(envelope.sequence) ? envelope.sequence : undefined,
      correlationId: stringOr(envelope.correlationId) ?? stringOr(properties.correlationId),
      causationId: stringOr(envelope.causationId),
      attempt: attemptOf(message),
      headers: { ...(properties.headers ?? {}) },
    },
  };
}

function idOf(eventId: unknown, messageId: unknown, content: Buffer): [string, IncomingEvent['idSource']] {
  if (isStorableId(eventId)) return [eventId, 'envelope'];
  if (isStorableId(messageId)) return [messageId, 'messageId'];
  return [`sha256:${createHash('sha256').update(content).digest('hex')}`, 'hash'];
}

function stringOr(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}
