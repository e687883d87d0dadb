import { buildEnvelope } from './envelope.js';
import { newEventId } from './event-id.js';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The 48-bit millisecond timestamp at the front of a UUIDv7. */
const millisOf = (id: string) => Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16);

describe('newEventId', () => {
  it('is a UUIDv7 carrying the time it was made', () => {
    const before = Date.now();
    const id = newEventId();
    const after = Date.now();
    expect(id).toMatch(UUID_V7);
    expect(millisOf(id)).toBeGreaterThanOrEqual(before);
    expect(millisOf(id)).toBeLessThanOrEqual(after);
  });

  it('never repeats, across many refills of its random pool', () => {
    const ids = Array.from({ length: 20_000 }, newEventId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => UUID_V7.test(id))).toBe(true);
  });

  it('sorts an id made in a later millisecond after one made earlier', () => {
    const first = newEventId();
    const deadline = Date.now() + 1_000;
    let later = newEventId();
    while (millisOf(later) === millisOf(first) && Date.now() < deadline) later = newEventId();
    expect(millisOf(later)).toBeGreaterThan(millisOf(first));
    expect(later > first).toBe(true);
  });

  it('is the id of an envelope unless the publisher gives one', () => {
    expect(buildEnvelope('users', 'UserChanged', {}).eventId).toMatch(UUID_V7);
    expect(buildEnvelope('users', 'UserChanged', {}, { eventId: 'order-17' }).eventId).toBe('order-17');
  });
});
