import type { EntityManager } from 'typeorm';
import { HandlerRunOverError, HandlerTimeoutError } from '../errors/handler-timeout.error.js';
import { deferred } from '../../test/support/deferred.js';
import { HandlerRun } from './handler-run.js';

describe('HandlerRun', () => {
  const manager = { query: async () => 'ok', label: 'manager' } as unknown as EntityManager & { label: string };

  it('returns what the work returns within the timeout, and closes the manager afterwards', async () => {
    const run = new HandlerRun('X.handle', 1_000, () => undefined);
    const guarded = run.guard(manager) as typeof manager;
    await expect(run.run(async () => guarded.query('SELECT 1'))).resolves.toBe('ok');
    expect(run.closed()).toBeUndefined();
    run.end();
    expect(run.closed()).toBeInstanceOf(HandlerRunOverError);
    expect(() => guarded.label).toThrow(HandlerRunOverError);
  });

  it('fails a run that outlasts its timeout, aborts the signal, and reports how the late run ended', async () => {
    const late: string[] = [];
    const run = new HandlerRun('X.handle', 20, (outcome) => late.push(outcome));
    const guarded = run.guard(manager) as typeof manager;
    const release = deferred<void>();
    const work = run.run(async () => {
      await release.promise;
      return guarded.query('SELECT 1');
    });
    await expect(work).rejects.toThrow(HandlerTimeoutError);
    expect(run.signal.aborted).toBe(true);
    expect(run.signal.reason).toBeInstanceOf(HandlerTimeoutError);
    expect(run.closed()).toBeInstanceOf(HandlerRunOverError);
    release.resolve();
    const deadline = Date.now() + 1_000;
    while (late.length === 0 && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve));
    expect(late).toEqual([expect.stringMatching(/^failed \d+ ms after its timeout \(.*this run of the handler is over/)]);
  });

  it('passes a failure of the work through unchanged and never times out without a timeout', async () => {
    const boom = new Error('boom');
    await expect(new HandlerRun('X.handle', 1_000, () => undefined).run(async () => Promise.reject(boom))).rejects.toBe(boom);
    await expect(new HandlerRun('X.handle', false, () => undefined).run(async () => 7)).resolves.toBe(7);
  });
});
