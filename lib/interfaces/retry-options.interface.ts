import type { Duration } from '../options/duration.js';

/**
 * `attempts` counts every run including the first: `{ attempts: 4, delays: ['1s', '10s', '1m'] }`
 * is one run and three retries. A shorter `delays` list repeats its last entry.
 */
export interface RetryOptions {
  attempts: number;
  delays?: Duration[];
}

/** A retry policy after defaults and units are resolved. */
export interface RetryPolicy {
  attempts: number;
  /** Delay before retry n (index 0 is the wait after the first failure); length attempts - 1. */
  delaysMs: number[];
}
