import { parseDuration } from './duration.js';

describe('parseDuration', () => {
  it.each([
    [250, 250],
    ['250ms', 250],
    ['10s', 10_000],
    ['1.5s', 1_500],
    ['1m', 60_000],
    ['2h', 7_200_000],
    [' 3 s ', 3_000],
  ])('%p -> %p ms', (input, expected) => {
    expect(parseDuration(input)).toBe(expected);
  });

  it.each([[-1], [Number.NaN], ['10'], ['1d'], ['ten seconds'], [''], [null as unknown as string]])(
    'rejects %p',
    (input) => {
      expect(parseDuration(input)).toBeUndefined();
    },
  );
});
