import { InvalidEventDataError } from '../errors/invalid-event-data.error.js';
import { buildEnvelope, keyBucket, publishPropertiesOf } from './envelope.js';

describe('buildEnvelope', () => {
  it('carries key and sequence', () => {
    expect(buildEnvelope('users', 'UserChanged', { id: 1 }, { key: 'u-1', sequence: 4 })).toMatchObject({ key: 'u-1', sequence: 4, source: 'users' });
  });

  it.each([0, -1, 1.5, Number.NaN, '3'])('refuses the sequence %p', (sequence) => {
    expect(() => buildEnvelope('users', 'UserChanged', {}, { sequence: sequence as number })).toThrow(InvalidEventDataError);
    expect(() => buildEnvelope('users', 'UserChanged', {}, { sequence: sequence as number })).toThrow(/positive integer/);
  });
});

describe('keyBucket', () => {
  it('is FNV-1a (32-bit) of the UTF-8 key, modulo 256', () => {
    // Published FNV-1a test vectors: "a" -> 0xe40c292c, "foobar" -> 0xbf9cf968.
    expect(keyBucket('a')).toBe(0x2c);
    expect(keyBucket('foobar')).toBe(0x68);
    expect(keyBucket('')).toBe(0x811c9dc5 % 256);
  });

  it('is carried as the sync-key-bucket header of events with a key, and only those', () => {
    const keyed = buildEnvelope('users', 'UserUpdated', {}, { key: 'foobar' });
    expect(publishPropertiesOf(keyed).headers).toEqual({ 'sync-key-bucket': '104' });
    expect(publishPropertiesOf(buildEnvelope('users', 'UserUpdated', {})).headers).toBeUndefined();
    expect(publishPropertiesOf(buildEnvelope('users', 'UserUpdated', {}), { tenant: 'a' }).headers).toEqual({ tenant: 'a' });
  });
});
