/**
 * A thousand hostile deliveries on one handler's queue: bytes that are not JSON, JSON that is not
 * an envelope, bodies over `maxMessageBytes`, content types and encodings that are not plain JSON,
 * prototype-pollution keys, garbage headers, events without ids and ids reused with other data.
 * The test works out the fate of each message from what it generated (handled once, or
 * dead-lettered with a reason) and checks every one of them against the rows, the DLQ and the
 * counters; the consumer must still be consuming afterwards. HOSTILE_SEED replays a mix.
 */
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { Injectable } from '@nestjs/common';
import type { GetMessage, Options } from 'amqplib';
import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';
import { deadLetterQueueName, EventContext, EventTooLargeError, OnEvent, SYNC_HEADERS, SyncProcessedEvent, SyncPublisher, SyncServer } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { Broker } from '../support/broker.js';
import { queueDepths } from '../support/broker-control.js';
import { unique, waitFor } from '../support/wait.js';

/** One row per committed handler run, holding the data the handler saw. */
@Entity('test_hostile_runs')
class HostileRun {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ type: 'varchar', length: 200 }) consumer!: string;
  @Column({ name: 'event_id', type: 'varchar', length: 300 }) eventId!: string;
  @Column({ type: 'text' }) data!: string;
}

const EVENT_TYPE = 'Hostile.Received';
/** Our correlation header on every raw message (no `x-` prefix: dead-lettering drops those). */
const CASE_HEADER = 'test-case';
const MESSAGES = 1_000;
const SMALL_MAX_BYTES = 64 * 1024;
const DEFAULT_MAX_BYTES = 1024 * 1024;

type Expectation = { fate: 'handled'; eventId: string; data: string } | { fate: 'dead'; reason: 'malformed' | 'too-large' | 'unhandled-event-type'; attempts: number };

interface Planned {
  caseId: string;
  kind: string;
  body: Buffer;
  options: Options.Publish;
  outcome: Expectation;
}

/** mulberry32: a small seeded generator, so a failing mix can be replayed with its seed. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function sha256(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/** The JSON text of the `data` a handler receives for this body, as the handler stores it. */
function dataTextOf(body: Buffer): string {
  return JSON.stringify((JSON.parse(body.toString('utf8')) as { data?: unknown }).data ?? null);
}

/** The delivery count a consumer reads from `sync-attempt`: a positive integer (or 1–9 digits), else 1. */
function attemptOf(headers: Record<string, unknown> | undefined): number {
  const raw = headers && Object.prototype.hasOwnProperty.call(headers, SYNC_HEADERS.attempt) ? headers[SYNC_HEADERS.attempt] : undefined;
  const attempt = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d{1,9}$/.test(raw) ? Number(raw) : Number.NaN;
  return Number.isSafeInteger(attempt) && attempt >= 1 ? attempt : 1;
}

/** The id a consumer gives an event: the envelope's eventId, else the AMQP messageId, else a hash of the body. */
function eventIdOf(body: Buffer, messageId: string | undefined): string {
  const { eventId } = JSON.parse(body.toString('utf8')) as { eventId?: unknown };
  if (typeof eventId === 'string' && eventId.length > 0 && eventId.length <= 200) return eventId;
  if (messageId !== undefined && messageId.length > 0 && messageId.length <= 200) return messageId;
  return `sha256:${sha256(body)}`;
}

/** A body of exactly `bytes` bytes: the envelope with its data padded. */
function paddedEnvelope(fields: Record<string, unknown>, bytes: number): Buffer {
  const base = JSON.stringify({ ...fields, data: { pad: '' } });
  const missing = bytes - Buffer.byteLength(base);
  if (missing < 0) throw new Error(`an envelope of ${bytes} bytes cannot hold ${base}`);
  return Buffer.from(JSON.stringify({ ...fields, data: { pad: 'x'.repeat(missing) } }));
}

/**
 * The seeded mix: what is sent and what must become of it. Every message carries the test-case
 * header or (when it has no headers at all) a messageId that names it, so each dead letter can
 * be traced back; valid events are known by the id the consumer will give them.
 */
function plan(runId: string, seed: number, total: number, maxBytes: number): Planned[] {
  const random = seeded(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const int = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  const text = () => pick(['plain', 'ünïcödé', '日本語', '😀 emoji', 'line\nbreak', 'quote " and \\ backslash', '<xml/>', '{"not":"parsed"}', ' ', '']);
  const goodContentType = () => pick([undefined, 'application/json', 'application/json; charset=utf-8', 'text/json', 'application/vnd.api+json', 'Application/JSON', 'application/cloudevents+json; charset=UTF-8']);
  const goodEncoding = () => pick([undefined, undefined, 'identity', 'utf-8', 'UTF-8', 'utf8']);
  const garbageAttempt = () => pick<unknown>(['abc', '12x', '', -7, 0, 2.5, 1e12, '1000000000', '7', 3, { nested: 1 }, [1, 2], true, null, Buffer.from('3')]);
  const weirdHeaders = (): Record<string, unknown> => {
    const headers: Record<string, unknown> = JSON.parse('{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}');
    const extra: Array<[string, unknown]> = [
      ['', 'empty key'],
      [' ', 'space key'],
      ['ключ-🔑', 'unicode key'],
      ['k'.repeat(255), 'longest key'],
      ['toString', 'not a function'],
      ['hasOwnProperty', 1],
      [SYNC_HEADERS.reason, 'exhausted'],
      [SYNC_HEADERS.consumer, 'someone-else'],
      [SYNC_HEADERS.attempts, 'many'],
      ['x-death', 'not a list'],
      ['nul', 'a\u0000b'],
      ['long', 'é'.repeat(1_000)],
      ['nested', { '': { deeper: [1, 'two', null, false, { '!': 'timestamp', value: 1_700_000_000 }] } }],
      ['negative', -2_147_483_649],
      ['binary', Buffer.from([0, 255, 1, 254])],
    ];
    for (const [key, value] of extra) if (random() < 0.5) headers[key] = value;
    return headers;
  };

  const planned: Planned[] = [];
  const reusableEventIds: string[] = [];
  const reusableMessageIds: string[] = [];
  const reusableHashBodies: Buffer[] = [];

  for (let index = 0; index < total; index++) {
    const caseId = `${runId}-${String(index).padStart(4, '0')}`;
    const eventId = `evt-${caseId}`;
    const envelope = (extra: Record<string, unknown> = {}) => ({ eventId, eventType: EVENT_TYPE, data: { caseId, text: text(), n: int(-1000, 1000) }, timestamp: new Date().toISOString(), source: 'hostile', ...extra });
    // Headers: mostly ours, sometimes with garbage on top, sometimes none at all (then the messageId names the case).
    const headerMode = random();
    let headers: Record<string, unknown> | undefined = { [CASE_HEADER]: caseId };
    if (headerMode < 0.2) headers = { ...weirdHeaders(), [CASE_HEADER]: caseId };
    else if (headerMode < 0.45) headers = { [CASE_HEADER]: caseId, [SYNC_HEADERS.attempt]: garbageAttempt() };
    else if (headerMode < 0.55) headers = undefined;
    let options: Options.Publish = { headers, contentType: goodContentType(), contentEncoding: goodEncoding() };
    const dead = (reason: 'malformed' | 'too-large' | 'unhandled-event-type'): Expectation => ({ fate: 'dead', reason, attempts: attemptOf(headers) });
    const handled = (body: Buffer, messageId?: string): Expectation => ({ fate: 'handled', eventId: eventIdOf(body, messageId), data: dataTextOf(body) });

    let kind: string;
    let body: Buffer;
    let outcome: Expectation;
    const roll = random();
    if (roll < 0.1) {
      kind = 'valid envelope';
      body = Buffer.from(pick([JSON.stringify(envelope()), `  \n${JSON.stringify(envelope({ unknownField: [1, { x: null }] }))}\t\n`]));
      outcome = handled(body);
    } else if (roll < 0.16) {
      kind = 'no eventId, messageId';
      const messageId = `msg-${caseId}`;
      body = Buffer.from(JSON.stringify({ eventType: EVENT_TYPE, data: { caseId, text: text() }, timestamp: new Date().toISOString() }));
      options = { ...options, messageId };
      reusableMessageIds.push(messageId);
      outcome = handled(body, messageId);
    } else if (roll < 0.21) {
      kind = 'no eventId, no messageId (hash)';
      body = Buffer.from(JSON.stringify({ eventType: EVENT_TYPE, data: { caseId, text: text() } }));
      options = { ...options, headers: headers ?? { [CASE_HEADER]: caseId } };
      reusableHashBodies.push(body);
      outcome = handled(body);
    } else if (roll < 0.25) {
      kind = 'unusable eventId';
      const badId = pick<unknown>([42, '', null, { id: 1 }, ['a'], 'i'.repeat(201)]);
      const messageId = random() < 0.5 ? `msg-${caseId}` : pick([undefined, 'm'.repeat(201)]);
      body = Buffer.from(JSON.stringify({ ...envelope(), eventId: badId }));
      options = { ...options, messageId, headers: headers ?? { [CASE_HEADER]: caseId } };
      outcome = handled(body, messageId);
    } else if (roll < 0.3) {
      kind = 'prototype keys in data';
      body = Buffer.from(
        pick([
          `{"eventId":"${eventId}","eventType":"${EVENT_TYPE}","data":{"__proto__":{"polluted":true},"caseId":"${caseId}"}}`,
          `{"eventId":"${eventId}","eventType":"${EVENT_TYPE}","data":{"constructor":{"prototype":{"polluted":true}},"caseId":"${caseId}"}}`,
          `{"__proto__":{"polluted":true,"eventType":"Hostile.Hijacked"},"eventId":"${eventId}","eventType":"${EVENT_TYPE}","data":{"prototype":{"polluted":true}}}`,
          `{"constructor":{"prototype":{"polluted":true}},"prototype":{"polluted":true},"eventId":"${eventId}","eventType":"${EVENT_TYPE}","data":[{"__proto__":{"polluted":true}}]}`,
        ]),
      );
      outcome = handled(body);
    } else if (roll < 0.32) {
      kind = 'deeply nested data';
      const depth = int(50, 400);
      body = Buffer.from(`{"eventId":"${eventId}","eventType":"${EVENT_TYPE}","data":${'{"a":'.repeat(depth)}"${caseId}"${'}'.repeat(depth)}}`);
      outcome = handled(body);
    } else if (roll < 0.335) {
      kind = 'exactly maxMessageBytes';
      body = paddedEnvelope({ eventId, eventType: EVENT_TYPE }, maxBytes);
      outcome = handled(body);
    } else if (roll < 0.36 && reusableEventIds.length > 0) {
      kind = 'eventId reused with other data';
      body = Buffer.from(JSON.stringify({ eventId: pick(reusableEventIds), eventType: EVENT_TYPE, data: { caseId, reused: true } }));
      outcome = handled(body);
    } else if (roll < 0.375 && reusableMessageIds.length > 0) {
      kind = 'messageId reused with other data';
      const messageId = pick(reusableMessageIds);
      body = Buffer.from(JSON.stringify({ eventType: EVENT_TYPE, data: { caseId, reused: true } }));
      options = { ...options, messageId };
      outcome = handled(body, messageId);
    } else if (roll < 0.385 && reusableHashBodies.length > 0) {
      kind = 'identical body without ids';
      body = pick(reusableHashBodies);
      options = { ...options, headers: headers ?? { [CASE_HEADER]: caseId } };
      outcome = handled(body);
    } else if (roll < 0.46) {
      kind = 'invalid JSON';
      const valid = JSON.stringify(envelope());
      body = pick([
        Buffer.from(valid.slice(0, int(1, valid.length - 1))),
        Buffer.from(`${valid}}`),
        Buffer.from(valid.replace(/"/g, "'")),
        Buffer.from(`{"eventId":"${eventId}","eventType":"${EVENT_TYPE}","data":NaN}`),
        Buffer.from('undefined'),
        Buffer.from('{'),
        Buffer.from(' \n\t '),
        Buffer.from(`\ufeff${valid}`),
        Buffer.from(Array.from({ length: int(1, 300) }, () => int(0, 255))),
      ]);
      outcome = dead('malformed');
    } else if (roll < 0.49) {
      kind = 'empty body';
      body = Buffer.alloc(0);
      outcome = dead('malformed');
    } else if (roll < 0.54) {
      kind = 'over maxMessageBytes';
      body =
        random() < 0.7
          ? paddedEnvelope({ eventId, eventType: EVENT_TYPE }, maxBytes + pick([1, 2, int(3, 30_000)]))
          : Buffer.from(Array.from({ length: maxBytes + int(1, 5_000) }, () => int(0, 255)));
      // Too large wins over everything else: the body is never read, its content type never checked.
      if (random() < 0.3) options = { ...options, contentType: 'application/octet-stream' };
      outcome = dead('too-large');
    } else if (roll < 0.61) {
      kind = 'JSON that is not an object';
      body = Buffer.from(pick(['[]', `[${JSON.stringify(envelope())}]`, '42', '-0.5e3', `"${EVENT_TYPE}"`, 'null', 'true', 'false', '""']));
      outcome = dead('malformed');
    } else if (roll < 0.69) {
      kind = 'missing, non-string or empty eventType';
      const eventType = pick<unknown>([undefined, '', 42, null, true, { name: EVENT_TYPE }, [EVENT_TYPE]]);
      body = Buffer.from(JSON.stringify({ ...envelope(), eventType }));
      outcome = dead('malformed');
    } else if (roll < 0.73) {
      kind = 'eventType only through prototype keys';
      body = Buffer.from(
        pick([
          `{"__proto__":{"eventType":"${EVENT_TYPE}"},"eventId":"${eventId}","data":{}}`,
          `{"constructor":{"prototype":{"eventType":"${EVENT_TYPE}"}},"eventId":"${eventId}","data":{}}`,
        ]),
      );
      outcome = dead('malformed');
    } else if (roll < 0.78) {
      kind = 'event type the handler does not subscribe to';
      body = Buffer.from(JSON.stringify({ ...envelope(), eventType: pick(['Hostile.Other', ` ${EVENT_TYPE}`, EVENT_TYPE.toLowerCase(), `${EVENT_TYPE}\u0000`, '#', '*']) }));
      outcome = dead('unhandled-event-type');
    } else if (roll < 0.87) {
      kind = 'content type that is not JSON';
      body = Buffer.from(JSON.stringify(envelope()));
      options = { ...options, contentType: pick(['text/plain', 'application/octet-stream', 'application/xml', 'application/json-seq', 'json', 'text/html; charset=utf-8', 'application/x-www-form-urlencoded']) };
      outcome = dead('malformed');
    } else if (roll < 0.93) {
      kind = 'unsupported content encoding';
      const gzip = random() < 0.5;
      body = gzip ? gzipSync(JSON.stringify(envelope())) : Buffer.from(JSON.stringify(envelope()));
      options = { ...options, contentEncoding: gzip ? 'gzip' : pick(['gzip', 'deflate', 'br', 'base64', 'utf-16']) };
      outcome = dead('malformed');
    } else {
      kind = 'valid envelope with garbage headers';
      body = Buffer.from(JSON.stringify(envelope()));
      options = { ...options, headers: { ...weirdHeaders(), [CASE_HEADER]: caseId, [SYNC_HEADERS.attempt]: garbageAttempt() } };
      outcome = handled(body);
    }
    if (outcome.fate === 'handled' && kind === 'valid envelope') reusableEventIds.push(eventId);
    // A dead letter must be traceable: without our header, the messageId names the case.
    if (outcome.fate === 'dead' && options.headers === undefined) options = { ...options, messageId: caseId };
    planned.push({ caseId, kind, body, options, outcome });
  }
  return planned;
}

function caseOf(message: GetMessage): string | undefined {
  const header = message.properties.headers?.[CASE_HEADER];
  return typeof header === 'string' ? header : message.properties.messageId;
}

/** Publishes in order, at most `window` confirms outstanding at once. */
async function publishAll(broker: Broker, exchange: string, messages: Planned[], window = 50): Promise<void> {
  for (let start = 0; start < messages.length; start += window) {
    await Promise.all(messages.slice(start, start + window).map((message) => broker.publishRaw(exchange, EVENT_TYPE, message.body, message.options)));
  }
}

function expectNoPollution(): void {
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted')).toBe(false);
  expect((Object.prototype as Record<string, unknown>).polluted).toBeUndefined();
}

describe('a thousand hostile deliveries on one handler (PostgreSQL, maxMessageBytes 64 KiB)', () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Hostile.onReceived');
  const seed = Number(process.env.HOSTILE_SEED ?? 20_240_601);

  @Injectable()
  class Hostile {
    @OnEvent(EVENT_TYPE, { consumer })
    async onReceived(data: unknown, ctx: EventContext) {
      await ctx.manager.insert(HostileRun, { consumer, eventId: ctx.eventId, data: JSON.stringify(data ?? null) });
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'postgres', providers: [Hostile], entities: [HostileRun], sync: { maxMessageBytes: SMALL_MAX_BYTES, retry: { attempts: 2, delays: [50] } } });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(HostileRun).delete({ consumer });
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await app.close();
    await broker.close();
  });

  it('handles every valid event once and dead-letters every other message with its reason, and keeps consuming', async () => {
    const startedAt = Date.now();
    const queue = app.queueOf(consumer);
    const messages = plan(consumer, seed, MESSAGES, SMALL_MAX_BYTES);
    const valid = messages.filter((message) => message.outcome.fate === 'handled');
    const invalid = messages.filter((message) => message.outcome.fate === 'dead');
    // The first message of an id wins: later ones (other data, or the same bytes) are duplicates.
    const firstDataById = new Map<string, string>();
    for (const { outcome } of valid) if (outcome.fate === 'handled' && !firstDataById.has(outcome.eventId)) firstDataById.set(outcome.eventId, outcome.data);
    // The mix really covers what it claims to: every one of the 20 kinds, and ids that come again.
    const kinds = new Set(messages.map((message) => message.kind));
    expect(kinds.size).toBe(20);
    expect(valid.length - firstDataById.size).toBeGreaterThanOrEqual(10);

    await publishAll(broker, app.exchange, messages);
    const settled = () => {
      const counters = app.metrics.snapshot(consumer);
      return counters.handled + counters.duplicates + counters.deadLettered;
    };
    await waitFor(() => settled() >= MESSAGES, { timeoutMs: 90_000, intervalMs: 100, what: `${MESSAGES} deliveries settled (settled so far: ${settled()})` });

    // Dead letters: exactly the invalid ones, each with its reason, its attempt count and its bytes unchanged.
    const dead = await broker.takeAll(deadLetterQueueName(queue), invalid.length, 30_000);
    expect(dead).toHaveLength(invalid.length);
    const deadByCase = new Map(dead.map((message) => [caseOf(message), message]));
    expect(deadByCase.size).toBe(invalid.length);
    const wrongFates: string[] = [];
    for (const message of invalid) {
      if (message.outcome.fate !== 'dead') continue;
      const letter = deadByCase.get(message.caseId);
      const headers = letter?.properties.headers ?? {};
      const problem = !letter
        ? 'not in the DLQ'
        : headers[SYNC_HEADERS.reason] !== message.outcome.reason
          ? `reason ${String(headers[SYNC_HEADERS.reason])}, expected ${message.outcome.reason}`
          : headers[SYNC_HEADERS.attempts] !== message.outcome.attempts
            ? `sync-attempts ${String(headers[SYNC_HEADERS.attempts])}, expected ${message.outcome.attempts}`
            : headers[SYNC_HEADERS.consumer] !== consumer
              ? `sync-consumer ${String(headers[SYNC_HEADERS.consumer])}`
              : !letter.content.equals(message.body)
                ? 'body changed'
                : message.outcome.reason === 'too-large' && headers[SYNC_HEADERS.errorName] !== 'MessageTooLarge'
                  ? `sync-error-name ${String(headers[SYNC_HEADERS.errorName])}`
                  : undefined;
      if (problem) wrongFates.push(`${message.caseId} (${message.kind}): ${problem}`);
    }
    expect(wrongFates).toEqual([]);

    // Handler rows: one per distinct valid id, holding the data of the first message with that id.
    const rows = await app.dataSource.getRepository(HostileRun).findBy({ consumer });
    const rowsById = new Map<string, HostileRun[]>();
    for (const row of rows) rowsById.set(row.eventId, [...(rowsById.get(row.eventId) ?? []), row]);
    const wrongRows: string[] = [];
    for (const [eventId, data] of firstDataById) {
      const found = rowsById.get(eventId) ?? [];
      if (found.length !== 1) wrongRows.push(`${eventId}: ${found.length} rows`);
      else if (found[0].data !== data) wrongRows.push(`${eventId}: holds ${found[0].data.slice(0, 120)}, expected ${data.slice(0, 120)}`);
    }
    for (const eventId of rowsById.keys()) if (!firstDataById.has(eventId)) wrongRows.push(`${eventId}: a row for an id that was never valid`);
    expect(wrongRows).toEqual([]);
    expect(rows).toHaveLength(firstDataById.size);
    expect(await app.dataSource.getRepository(SyncProcessedEvent).countBy({ consumer })).toBe(firstDataById.size);

    const tooLarge = invalid.filter((message) => message.outcome.fate === 'dead' && message.outcome.reason === 'too-large').length;
    const malformed = invalid.filter((message) => message.outcome.fate === 'dead' && message.outcome.reason === 'malformed').length;
    expect(app.metrics.snapshot(consumer)).toMatchObject({
      handled: firstDataById.size,
      duplicates: valid.length - firstDataById.size,
      deadLettered: invalid.length,
      malformed: malformed + tooLarge,
      retried: 0,
      unsubscribed: 0,
    });
    expectNoPollution();

    // Still consuming: a well-formed event sent after all of them is handled.
    const last = `evt-${consumer}-last`;
    await broker.publishRaw(app.exchange, EVENT_TYPE, JSON.stringify({ eventId: last, eventType: EVENT_TYPE, data: { last: true } }), { contentType: 'application/json' });
    await waitFor(async () => (await app.dataSource.getRepository(HostileRun).countBy({ consumer, eventId: last })) === 1, { what: 'the final good event handled' });
    expect(app.app.get(SyncServer).consumerStatus()).toEqual([expect.objectContaining({ consumer, state: 'consuming' })]);

    // Nothing left behind: the handler queue, its retry tiers and (drained above) its DLQ are empty.
    const depths = await queueDepths(`${app.service}.`);
    expect(depths.size).toBeGreaterThanOrEqual(3);
    expect([...depths].filter(([, depth]) => depth.ready + depth.unacked > 0)).toEqual([]);

    const byReason = (reason: string) => invalid.filter((message) => message.outcome.fate === 'dead' && message.outcome.reason === reason).length;
    console.info(
      `hostile input (seed ${seed}): ${MESSAGES} messages in ${kinds.size} kinds; ${valid.length} valid -> ${firstDataById.size} handled + ` +
        `${valid.length - firstDataById.size} duplicates; ${invalid.length} dead-lettered (malformed ${malformed}, too-large ${tooLarge}, ` +
        `unhandled-event-type ${byReason('unhandled-event-type')}); ${((Date.now() - startedAt) / 1000).toFixed(1)} s`,
    );
  });

  it('settles an eventId PostgreSQL cannot store (a NUL character) on its first delivery, without spending retries', async () => {
    const before = app.metrics.snapshot(consumer);
    const settled = () => {
      const counters = app.metrics.snapshot(consumer);
      return counters.handled + counters.duplicates + counters.deadLettered - (before.handled + before.duplicates + before.deadLettered);
    };
    const eventId = `evt-${consumer}-nul\u0000`;
    await broker.publishRaw(app.exchange, EVENT_TYPE, JSON.stringify({ eventId, eventType: EVENT_TYPE, data: { nul: true } }), { headers: { [CASE_HEADER]: 'nul-id' } });

    await waitFor(() => settled() >= 1, { what: 'the event with a NUL in its id settled' });

    const after = app.metrics.snapshot(consumer);
    const letters = after.deadLettered > before.deadLettered ? await broker.takeAll(deadLetterQueueName(app.queueOf(consumer)), 1) : [];
    const fate = letters.length > 0 ? String(letters[0].properties.headers?.[SYNC_HEADERS.reason]) : 'handled';
    // An id that can never be stored is no transient failure: refused at once as malformed, or (like an over-long id)
    // replaced by the messageId or a hash of the body. Either way no retry is spent on it.
    expect({ retried: after.retried - before.retried, fate }).toEqual({ retried: 0, fate: expect.stringMatching(/^(malformed|handled)$/) });
    if (fate === 'handled') expect(await app.dataSource.getRepository(HostileRun).countBy({ consumer, data: JSON.stringify({ nul: true }) })).toBe(1);
    expect(app.app.get(SyncServer).consumerStatus()).toEqual([expect.objectContaining({ consumer, state: 'consuming' })]);
  });
});

describe('the default maxMessageBytes of 1 MiB (PostgreSQL)', () => {
  let app: TestApp;
  let broker: Broker;
  const consumer = unique('Hostile.onLarge');

  @Injectable()
  class Large {
    @OnEvent(EVENT_TYPE, { consumer })
    async onLarge(data: unknown, ctx: EventContext) {
      await ctx.manager.insert(HostileRun, { consumer, eventId: ctx.eventId, data: sha256(Buffer.from(JSON.stringify(data ?? null))) });
    }
  }

  beforeAll(async () => {
    broker = await Broker.connect();
    app = await startApp({ engine: 'postgres', providers: [Large], entities: [HostileRun] });
  });

  afterAll(async () => {
    await app.dataSource.getRepository(HostileRun).delete({ consumer });
    await app.dataSource.getRepository(SyncProcessedEvent).delete({ consumer });
    await app.close();
    await broker.close();
  });

  it('handles a body of exactly 1 MiB, dead-letters one byte more unread as too-large, and refuses to publish a larger event', async () => {
    const fits = paddedEnvelope({ eventId: unique('evt-fits'), eventType: EVENT_TYPE }, DEFAULT_MAX_BYTES);
    const over = paddedEnvelope({ eventId: unique('evt-over'), eventType: EVENT_TYPE }, DEFAULT_MAX_BYTES + 1);
    await broker.publishRaw(app.exchange, EVENT_TYPE, fits, { headers: { [CASE_HEADER]: 'fits' } });
    await broker.publishRaw(app.exchange, EVENT_TYPE, over, { headers: { [CASE_HEADER]: 'over' } });

    const [dead, ...more] = await broker.takeAll(deadLetterQueueName(app.queueOf(consumer)), 1, 30_000);
    await waitFor(() => app.metrics.snapshot(consumer).handled >= 1, { timeoutMs: 30_000, what: 'the 1 MiB event handled' });

    expect(more).toHaveLength(0);
    expect(dead.properties.headers).toMatchObject({ [CASE_HEADER]: 'over', [SYNC_HEADERS.reason]: 'too-large', [SYNC_HEADERS.errorName]: 'MessageTooLarge', [SYNC_HEADERS.consumer]: consumer });
    expect(dead.content.equals(over)).toBe(true);
    const rows = await app.dataSource.getRepository(HostileRun).findBy({ consumer });
    expect(rows.map((row) => [row.eventId, row.data])).toEqual([[eventIdOf(fits, undefined), sha256(Buffer.from(dataTextOf(fits)))]]);

    // A publisher holds itself to the same limit: nothing reaches the broker.
    const publisher = app.app.get(SyncPublisher);
    const published = app.metrics.snapshot().published;
    await expect(publisher.publish(EVENT_TYPE, { blob: 'y'.repeat(DEFAULT_MAX_BYTES) })).rejects.toBeInstanceOf(EventTooLargeError);
    expect(app.metrics.snapshot().published).toBe(published);
    expect(app.metrics.snapshot(consumer)).toMatchObject({ handled: 1, deadLettered: 1, malformed: 1, duplicates: 0 });
    expect(await broker.messageCount(app.queueOf(consumer))).toBe(0);
  });
});
