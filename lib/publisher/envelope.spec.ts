import { InvalidEventDataError } from '../errors/invalid-event-data.error.js';
import { buildEnvelope } from './envelope.js';

describe('buildEnvelope', () => {
  it('carries key and sequence', () => {
    expect(buildEnvelope('users', 'UserChanged', { id: 1 }, { key: 'u-1', sequence: 4 })).toMatchObject({ key: 'u-1', sequence: 4, source: 'users' });
  });

  it.each([0, -1, 1.5, Number.NaN, '3'])('refuses the sequence %p', (sequence) => {
    expect(() => buildEnvelope('users', 'UserChanged', {}, { sequence: sequence as number })).toThrow(InvalidEventDataError);
    expect(() => buildEnvelope('users', 'UserChanged', {}, { sequence: sequence as number })).toThrow(/positive integer/);
  });
});
