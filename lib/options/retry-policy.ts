import { InvalidSyncOptionsError } from '../errors/invalid-sync-options.error.js';
import type { RetryOptions, RetryPolicy } from '../interfaces/retry-options.interface.js';
import { parseDuration } from './duration.js';

const MAX_ATTEMPTS = 100;

/** Resolves `{ attempts, delays }` (or `false`) into one delay per retry; throws naming `where`. */
export function resolveRetryPolicy(input: RetryOptions | false, where: string): RetryPolicy {
  if (input === false) return { attempts: 1, delaysMs: [] };
  if (input === null || typeof input !== 'object') {
    throw new InvalidSyncOptionsError(where, 'must be an object or false', "Use e.g. { attempts: 4, delays: ['1s', '10s', '1m'] }.");
  }
  const { attempts, delays = [] } = input;
  if (!Number.isInteger(attempts) || attempts < 1 || attempts > MAX_ATTEMPTS) {
    throw new InvalidSyncOptionsError(
      `${where}.attempts`,
      `must be an integer from 1 to ${MAX_ATTEMPTS} (got ${String(attempts)})`,
      'It counts every run including the first: attempts: 4 is one run and three retries.',
    );
  }
  if (!Array.isArray(delays)) {
    throw new InvalidSyncOptionsError(`${where}.delays`, 'must be an array', "Use e.g. delays: ['1s', '10s', '1m'].");
  }
  const parsed = delays.map((delay, index) => {
    const ms = parseDuration(delay);
    if (ms === undefined || ms < 1) {
      throw new InvalidSyncOptionsError(
        `${where}.delays[${index}]`,
        `is not a valid delay (got ${JSON.stringify(delay)})`,
        "Use milliseconds (1500) or a number with a unit: '500ms', '10s', '1m', '2h'.",
      );
    }
    return ms;
  });
  if (attempts > 1 && parsed.length === 0) {
    throw new InvalidSyncOptionsError(
      `${where}.delays`,
      `is empty but attempts is ${attempts}`,
      "Give at least one delay (the last one repeats), e.g. delays: ['5s'].",
    );
  }
  const delaysMs = Array.from({ length: attempts - 1 }, (_, i) => parsed[Math.min(i, parsed.length - 1)]);
  return { attempts, delaysMs };
}
