import type { ConsumeMessage } from 'amqplib';
import { attemptOf, parseMessage } from './parse-message.js';

function delivery(body: string, properties: Partial<ConsumeMessage['properties']> = {}): ConsumeMessage {
  return {
    content: Buffer.from(body),
    fields: { deliveryTag: 1, redelivered: false, exchange: 'sync.events', routingKey: 'UserCreated', consumerTag: 'c' },
    properties: { headers: {}, ...properties } as ConsumeMessage['properties'],
  } as ConsumeMessage;
}

const seed = '{"eventType":"UserCreated","data":{"userId":"123","name":"Alice"},"timestamp":"2024-06-01T12:00:00Z"}';

describe('parseMessage', () => {
  it('takes a foreign message id from the AMQP messageId', () => {
    const result = parseMessage(delivery(seed, { messageId: 'm-1' }));
    expect(result).toMatchObject({ ok: true, event: { eventId: 'm-1', idSource: 'messageId', eventType: 'UserCreated', data: { userId: '123', name: 'Alice' }, attempt: 1 } });
  });

  it('hashes the body when there is no id at all, the same body giving the same id', () => {
    const first = parseMessage(delivery(seed));
    const second = parseMessage(delivery(seed));
    expect(first.ok && first.event.idSource).toBe('hash');
    expect(first.ok && first.event.eventId).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(first.ok && second.ok && first.event.eventId === second.event.eventId).toBe(true);
  });

  it('prefers the envelope id and reads our attempt header', () => {
    const result = parseMessage(delivery('{"eventId":"e-1","eventType":"X","data":1,"key":42}', { messageId: 'm', headers: { 'sync-attempt': 3 } }));
    expect(result).toMatchObject({ ok: true, event: { eventId: 'e-1', idSource: 'envelope', key: '42', attempt: 3 } });
  });

  it('skips an id longer than the dedupe column (200 characters) for the next source', () => {
    const long = 'x'.repeat(201);
    const fromEnvelope = parseMessage(delivery(`{"eventId":"${long}","eventType":"X"}`, { messageId: 'm-2' }));
    const fromMessageId = parseMessage(delivery(seed, { messageId: long }));
    const atLimit = parseMessage(delivery(`{"eventId":"${'y'.repeat(200)}","eventType":"X"}`));
    expect(fromEnvelope).toMatchObject({ ok: true, event: { eventId: 'm-2', idSource: 'messageId' } });
    expect(fromMessageId).toMatchObject({ ok: true, event: { idSource: 'hash', eventId: expect.stringMatching(/^sha256:/) } });
    expect(atLimit).toMatchObject({ ok: true, event: { eventId: 'y'.repeat(200), idSource: 'envelope' } });
  });

  it.each([
    ['not json', /not valid JSON/],
    ['', /not valid JSON/],
    ['[1,2]', /not a JSON object/],
    ['null', /not a JSON object/],
    ['{"data":{}}', /no string eventType/],
    ['{"eventType":7}', /no string eventType/],
  ])('marks %p as malformed', (body, reason) => {
    const result = parseMessage(delivery(body));
    expect(result.ok).toBe(false);
    expect(!result.ok && result.message).toMatch(reason);
  });

  it.each([
    ['application/json', true],
    ['application/json; charset=utf-8', true],
    ['Application/JSON', true],
    ['application/vnd.masstransit+json', true],
    ['text/json', true],
    [undefined, true],
    ['text/plain', false],
    ['application/octet-stream', false],
    ['application/xml', false],
    ['', false],
  ])('content type %p is accepted: %p', (contentType, accepted) => {
    const result = parseMessage(delivery(seed, { contentType }));
    expect(result.ok).toBe(accepted);
    if (!result.ok) expect(result.message).toMatch(/content type .* is not JSON/);
  });

  it.each([
    ['utf-8', true],
    ['UTF8', true],
    ['identity', true],
    ['gzip', false],
    ['base64', false],
  ])('content encoding %p is accepted: %p', (contentEncoding, accepted) => {
    const result = parseMessage(delivery(seed, { contentEncoding }));
    expect(result.ok).toBe(accepted);
    if (!result.ok) expect(result.message).toMatch(/content encoding .* is not supported/);
  });

  it('does not let __proto__ keys reach the prototype', () => {
    const result = parseMessage(delivery('{"eventType":"X","data":{"__proto__":{"polluted":true}}}'));
    expect(result.ok).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('attemptOf', () => {
  const withAttempt = (value: unknown) => delivery('{}', { headers: { 'sync-attempt': value } });
  it.each([
    [2, 2],
    ['3', 3],
    ['3abc', 1],
    ['2.5', 1],
    [2.5, 1],
    [-1, 1],
    [0, 1],
    ['0', 1],
    ['1000000000', 1],
    [undefined, 1],
  ])('%p -> %p', (value, expected) => {
    expect(attemptOf(withAttempt(value))).toBe(expected);
  });
});

describe('ids the dedupe table cannot store', () => {
  it('falls back from an eventId with NUL to the messageId, then to the hash', () => {
    const body = '{"eventId":"a\\u0000b","eventType":"X"}';
    expect(parseMessage(delivery(body, { messageId: 'm-3' }))).toMatchObject({ ok: true, event: { eventId: 'm-3', idSource: 'messageId' } });
    expect(parseMessage(delivery(body, { messageId: 'm\u0000' }))).toMatchObject({ ok: true, event: { idSource: 'hash' } });
  });
});
