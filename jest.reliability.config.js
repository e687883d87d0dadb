/**
 * The reliability suite (test/reliability): long runs against the real services that restart
 * the broker and PostgreSQL and kill processes. Not part of `npm test`; run `npm run test:reliability`.
 */
import base from './jest.config.js';

export default {
  ...base,
  roots: ['<rootDir>/test'],
  testMatch: ['<rootDir>/test/reliability/**/*.reliability-spec.ts'],
  // Each run bounds its own waits (CHAOS_TIMEOUT); this only catches a hang beyond them.
  testTimeout: 60 * 60 * 1000,
};
